"""Root pytest configuration: how nbval checks the notebooks (see the README, "How the stored outputs stay current").

- Figures: nbval skips image/png by default; here every stored PNG is compared with the new one pixel by
  pixel, within tests/notebook_checks.FIGURE_TOLERANCE levels per channel, so a last-bit change in the
  data passes and a visible change fails.
- A second numeric environment: every notebook is collected twice. `book/X.ipynb` runs as the machine
  is set up; `book/X.ipynb[second_env]` runs in a kernel started with numpy's SIMD groups above its
  baseline disabled, numba compiled for a generic CPU and BLAS on another thread count
  (tests/notebook_checks.second_env). Both must reproduce the stored outputs.
"""

from __future__ import annotations

import os
import types
from functools import lru_cache
from unittest import mock

from nbval.plugin import IPyNbCell, IPyNbFile

from tests.notebook_checks import figure_difference, second_env

SECOND_ENV = "second_env"


@lru_cache(maxsize=1)
def _second_env() -> dict[str, str]:
    """Computed once per process, from what numpy and BLAS report on this machine."""
    return second_env()


class SecondEnvNotebook(IPyNbFile):
    """A notebook whose kernel starts in the second numeric environment."""

    def setup(self):
        with mock.patch.dict(os.environ, _second_env()):
            super().setup()  # starts the kernel, which copies os.environ


def pytest_collect_file(file_path, parent):
    """Collect every notebook a second time (nbval collects the first) under its own node id."""
    opt = parent.config.option
    if (opt.nbval or opt.nbval_lax) and file_path.suffix == ".ipynb":
        nodeid = f"{file_path.relative_to(parent.config.rootpath).as_posix()}[{SECOND_ENV}]"
        return SecondEnvNotebook.from_parent(parent, path=file_path, name=f"{file_path.name}[{SECOND_ENV}]",
                                             nodeid=nodeid)
    return None


def compare_outputs(self, test, ref, skip_compare=None):
    """nbval's comparison (which skips image/png), then every PNG within the pixel tolerance."""
    if not IPyNbCell.compare_outputs(self, test, ref, skip_compare):
        return False
    pngs = [[o["data"]["image/png"] for o in outs if "image/png" in o.get("data", {})] for outs in (ref, test)]
    if len(pngs[0]) != len(pngs[1]):
        self.comparison_traceback.append(f"{len(pngs[0])} stored figure(s), {len(pngs[1])} new")
        return False
    for k, (stored, new) in enumerate(zip(*pngs)):
        why = figure_difference(stored, new)
        if why is not None:
            self.comparison_traceback.append(f"figure {k + 1} of the cell: {why}")
            return False
    return True


def pytest_collection_modifyitems(session, config, items):
    """Give every nbval cell the tolerant figure comparison."""
    for item in items:
        if isinstance(item, IPyNbCell):
            item.compare_outputs = types.MethodType(compare_outputs, item)
