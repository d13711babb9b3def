"""The ``sunray`` command of the Python package: the Rust command line, run by the
extension (``start``, ``stop``, ``status``, ``slurm run …``)."""

from __future__ import annotations

import os
import shutil
import signal
import sys

from . import _sunray


def main() -> None:
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
