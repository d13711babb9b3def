"""The ``sunray`` command of the Python package: the Rust command line, run by the
extension (``start``, ``stop``, ``status``, ``slurm run …``)."""

from __future__ import annotations

import os
import shutil
import signal
import sys

from . import _sunray


def run_ray(argv: list[str]) -> None:
    """``sunray run-ray script.py args…``: runs a script written for Ray, its
    ``import ray`` (and ``ray.tune``, ``ray.air``…) resolving to sunray, in the driver
    and in its workers (they get the driver's ``sys.path``)."""
    if not argv or argv[0] in ("-h", "--help"):
        print(
            "usage: sunray run-ray SCRIPT.py [ARGS...]\n\nRuns a Ray script on sunray: "
            "`import ray` and its submodules resolve to sunray's."
        )
        sys.exit(0 if argv else 2)
    script = argv[0]
    if not os.path.isfile(script):
        print(f"sunray run-ray: no such script: {script}", file=sys.stderr)
        sys.exit(2)
    import runpy

    sys.argv = list(argv)
    sys.path[0:0] = [
        os.path.join(os.path.dirname(__file__), "_compat"),
        os.path.dirname(os.path.abspath(script)),
    ]
    import ray  # noqa: F401 - installs the ray -> sunray aliases

    runpy.run_path(script, run_name="__main__")


def main() -> None:
    if sys.argv[1:2] == ["run-ray"]:
        run_ray(sys.argv[2:])
        return
    # The command runs itself again (background daemons, node agents under srun): this
    # script, found the way the shell found it.
    exe = sys.argv[0]
    if os.sep not in exe:
        exe = shutil.which(exe) or exe
    # Ctrl-C and SIGTERM act as on the Rust binary (the Rust code installs its own
    # handlers where it has them).
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    # Node agents started from here keep Python workers started ahead, with this
    # interpreter and module path (a driver with the same ones adopts them).
    # sys.path[0] is this script's folder, which no driver's path has.
    os.environ["SUNRAY_PRESTART_PYTHON_PATH"] = os.pathsep.join(sys.path[1:])
    sys.exit(_sunray.cli_main(os.path.abspath(exe), ["sunray", *sys.argv[1:]]))


if __name__ == "__main__":
    main()
