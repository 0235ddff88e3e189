from gpt2lab.cli.main import main

if __name__ == "__main__":  # guard: spawned worker processes import this module too
    raise SystemExit(main())
