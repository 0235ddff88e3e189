"""Loaded by every Python process started with this folder on PYTHONPATH (`make test`'s smoke book build and
tests/test_chapters.py): the process has no network beyond this machine, like a laptop on a plane.

A connection to any address other than loopback fails at once with OSError (ENETUNREACH), as it would with
the cable out, so the book's own fallbacks (the packaged HellaSwag sample, random weights instead of OpenAI's)
are what gets exercised. Name lookups of other hosts fail too. Local sockets (Jupyter's kernel channels on
127.0.0.1, Unix sockets) work as usual.
"""

import errno
import ipaddress
import socket

_LOOPBACK = ("127.", "::1", "localhost", "0.0.0.0")
_connect, _connect_ex, _getaddrinfo = socket.socket.connect, socket.socket.connect_ex, socket.getaddrinfo


def _local(address) -> bool:
    if not isinstance(address, tuple):  # AF_UNIX: a path
        return True
    return str(address[0]).startswith(_LOOPBACK)


def _refuse(address):
    raise OSError(errno.ENETUNREACH, f"Network is unreachable (offline: {address[0]}:{address[1]})")


def connect(self, address):
    if not _local(address):
        _refuse(address)
    return _connect(self, address)


def connect_ex(self, address):
    if not _local(address):
        return errno.ENETUNREACH
    return _connect_ex(self, address)


def _numeric(host) -> bool:
    try:
        ipaddress.ip_address(str(host))
        return True
    except ValueError:
        return False


def getaddrinfo(host, *args, **kwargs):
    if host is not None and not str(host).startswith(_LOOPBACK) and not _numeric(host):  # connect() refuses IPs
        raise socket.gaierror(socket.EAI_NONAME, f"Name or service not known (offline: {host})")
    return _getaddrinfo(host, *args, **kwargs)


socket.socket.connect, socket.socket.connect_ex, socket.getaddrinfo = connect, connect_ex, getaddrinfo
