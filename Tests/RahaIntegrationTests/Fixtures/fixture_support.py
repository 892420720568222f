"""What every long-running fixture shares: it never outlives the test process."""
import os
import sys
import threading


def exit_when_stdin_closes() -> None:
    """Exits the process (at once, from a daemon thread) when standard input
    reaches end of file, i.e. when the test process that started it is gone."""

    def watch() -> None:
        try:
            while sys.stdin.buffer.read(4096):
                pass
        finally:
            os._exit(0)

    threading.Thread(target=watch, daemon=True).start()
