"""Shared test fixtures. Tests never touch the network: `no_network` makes any socket use fail loudly."""

from __future__ import annotations

import socket

import pytest
import torch


@pytest.fixture
def no_network(monkeypatch):
    def refuse(*args, **kwargs):
        raise RuntimeError("network access attempted in a test")

    monkeypatch.setattr(socket, "socket", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)


@pytest.fixture(autouse=True)
def _deterministic():
    torch.manual_seed(0)
    yield
