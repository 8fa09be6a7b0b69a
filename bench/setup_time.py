"""Cold and warm ``make run`` to the banner, from a fresh clone: ``python -m bench.setup_time``.

Clones the repository (HEAD) into a temporary folder, runs ``make run`` there with an empty uv
cache (cold: venv, uv, every pinned package, initdb, migrations, both services), stops it with
SIGINT, then runs it again (warm: everything installed, the database initialised). Prints the
seconds to the banner for each; nothing of the developer's checkout or caches is touched.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
BANNER = "BillingProxy is running"


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def timed_run(clone: Path, env: dict[str, str], log: Path, timeout: float) -> float:
    start = time.monotonic()
    with log.open("wb") as out:
        process = subprocess.Popen(
            ["make", "run"], cwd=clone, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        while time.monotonic() - start < timeout:
            if BANNER in log.read_text(errors="replace"):
                return time.monotonic() - start
            if process.poll() is not None:
                raise SystemExit(f"make run exited {process.returncode}:\n{log.read_text()[-3000:]}")
            time.sleep(0.2)
        raise SystemExit(f"no banner within {timeout:.0f} s:\n{log.read_text()[-3000:]}")
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGINT)
            process.wait(60)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--timeout", type=float, default=600)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bp-setup-") as tmp:
        clone = Path(tmp) / "clone"
        subprocess.run(["git", "clone", "-q", str(REPO), str(clone)], check=True)
        port = free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith(("VIRTUAL_ENV", "DATABASE_URL", "PYTHON"))}
        env.update(UV_CACHE_DIR=str(Path(tmp) / "uv-cache"), PORT=str(port), BILLING_SERVICE_PORT=str(free_port()))
        cold = timed_run(clone, env, Path(tmp) / "cold.log", args.timeout)
        print(f"cold make run to the banner: {cold:.1f} s (fresh clone, empty uv cache)", flush=True)
        warm = timed_run(clone, env, Path(tmp) / "warm.log", args.timeout)
        print(f"warm make run to the banner: {warm:.1f} s (installed, database initialised)", flush=True)
        install = [line for line in (Path(tmp) / "cold.log").read_text().splitlines() if line.startswith("[install]")]
        print("\n".join(install))


if __name__ == "__main__":
    sys.exit(main())
