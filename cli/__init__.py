"""The entry points above the stages: the `svlora` command and the quickstart. The core
package (`svlora/`) imports no stage; this layer may import them all."""

from __future__ import annotations


def main(argv: list[str] | None = None) -> int:
    from svlora.cli.app import main as run

    return run(argv)


__all__ = ["main"]
