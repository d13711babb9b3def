"""``import ray`` for scripts written for Ray, run with ``sunray run-ray script.py``:
this folder is put first on the script's ``sys.path`` (and so on its workers'), and
``ray`` and every ``ray.<module>`` resolve to ``sunray`` and ``sunray.<module>``.
Nothing named ``ray`` is installed; a Ray module sunray lacks fails to import with a
message that names it."""

import importlib
import importlib.abc
import importlib.util
import sys

import sunray


class _RayAsSunray(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def find_spec(self, fullname, path=None, target=None):
        if not fullname.startswith("ray."):
            return None
        real = "sunray." + fullname[len("ray.") :]
        try:
            importlib.import_module(real)
        except ModuleNotFoundError as e:
            if e.name is not None and (real == e.name or real.startswith(e.name + ".")):
                raise ModuleNotFoundError(
                    f"{fullname} is a Ray module that sunray does not implement "
                    f"(the script imports it; sunray has no {real})",
                    name=fullname,
                ) from None
            raise
        return importlib.util.spec_from_loader(fullname, self)

    def create_module(self, spec):
        return sys.modules["sunray." + spec.name[len("ray.") :]]

    def exec_module(self, module):
        pass


if not any(isinstance(f, _RayAsSunray) for f in sys.meta_path):
    sys.meta_path.insert(0, _RayAsSunray())
sys.modules[__name__] = sunray
