"""What every command shares: the consoles, the --etcd and --json options, and `friendly`,
which makes sure a user sees one clear error line and an exit code, never a traceback."""
from __future__ import annotations

import json
import os
import sys
import time
from functools import wraps
from typing import Any, Callable, NoReturn

import typer
from rich.console import Console
from rich.markup import escape

from vigil.model import SpecError
from vigil.store.etcd import StoreError

# Not a terminal (pipes, CI logs): do not squeeze tables into 80 columns.
console = Console(width=None if sys.stdout.isatty() else 200)
err = Console(stderr=True, width=None if sys.stderr.isatty() else 200)
ETCD_OPT = typer.Option(None, "--etcd", envvar="VIGIL_ETCD", help="etcd endpoints, comma separated")
JSON_OPT = typer.Option(False, "--json", help="machine-readable output")


def fail(msg: str, code: int = 1) -> NoReturn:
    """Print one error and exit. The message is escaped: log tails and paths may hold
    text rich would take for markup (and fail on)."""
    err.print(f"[red]error:[/red] {escape(msg)}")
    raise typer.Exit(code)


def _describe(e: BaseException) -> str:
    return str(e) or type(e).__name__


def friendly(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Turn errors into one clear line (LabError adds its log tail) and exit code 1, or 130
    on Ctrl-C, never a traceback. VIGIL_DEBUG=1 lets an unexpected error's traceback through."""

    @wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from vigil.hypervisor.guest_image import GuestImageError
        from vigil.lab.layout import LabError

        try:
            return fn(*args, **kwargs)
        except (typer.Exit, typer.Abort):
            raise
        except (SpecError, LabError, GuestImageError) as e:
            fail(str(e))
        except StoreError as e:
            fail(f"cannot reach etcd: {e}\n(is the lab up? 'vigil lab up', or set --etcd)")
        except OSError as e:  # ApiUnreachable and TimeoutError included
            fail(_describe(e))
        except KeyboardInterrupt:
            fail("interrupted", 130)
        except Exception as e:  # noqa: BLE001 - a bug: still one line, and how to see more
            if os.environ.get("VIGIL_DEBUG"):
                raise
            fail(f"unexpected {type(e).__name__}: {e} (VIGIL_DEBUG=1 shows the traceback)")

    return wrapper


def print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")


def age(t: float) -> str:
    if not t:
        return "-"
    s = max(0, time.time() - t)
    return f"{s:.0f}s" if s < 120 else f"{s / 60:.0f}m" if s < 7200 else f"{s / 3600:.0f}h"


def load_text(load: dict | None) -> str:
    """Measured use: CPU cores and memory in use (the agent's smoothed report)."""
    if not load:
        return "-"
    return (f"{load.get('cpu') or 0:.1f} cores, {load.get('memory_used_mb') or load.get('memory_mb') or 0:.0f} MiB"
            + (" (guest's figure)" if load.get("memory_from") == "balloon" else ""))


def progress(msg: str) -> None:
    err.print(f"[cyan]>[/] {msg}", highlight=False)
