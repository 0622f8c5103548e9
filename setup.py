"""Builds the optional C++/CUDA extension ``tlengine._C`` ahead of time.

Plain ``pip install -e .`` builds nothing native: the engine JIT-builds the extension on first
use (tlengine/kernels/build.py, cached in ~/.cache/tlengine), or falls back to the pure-PyTorch
reference ops. To build it at install time (torch must already be installed, hence no build
isolation):

    TLENGINE_BUILD_EXT=1 pip install -e . --no-build-isolation
    # or, in a source checkout:  TLENGINE_BUILD_EXT=1 python setup.py build_ext --inplace

The CUDA kernels (csrc/ops/cuda/*.cu) are compiled when torch is a CUDA build and the CUDA
toolkit is found (``TLENGINE_BUILD_CUDA=0/1`` overrides), with or without a GPU: without one,
TORCH_CUDA_ARCH_LIST defaults to "8.0;9.0+PTX", because torch can only pick -gencode flags from a
visible device. The build is portable (no -march=native) unless ``TLENGINE_NATIVE=1``.
Flags, sources and the CUDA decision are shared with the JIT build (engine/kernels/build.py).

Non-editable installs also get a copy of csrc/ inside the package (tlengine/kernels/csrc), so
the JIT build works from site-packages too.
"""

import importlib.util
import os
import shutil

from setuptools import setup
from setuptools.command.build_py import build_py

HERE = os.path.dirname(os.path.abspath(__file__))
CSRC = os.path.join(HERE, "csrc")


def _kernels_build():
    """engine/kernels/build.py, imported by path (tlengine itself is not installed yet)."""
    spec = importlib.util.spec_from_file_location(
        "_tlengine_kernels_build", os.path.join(HERE, "engine", "kernels", "build.py")
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class BuildPyWithSources(build_py):
    """Ships csrc/ as tlengine/kernels/csrc so an installed (non-editable) copy can JIT-build."""

    def run(self):
        super().run()
        if getattr(self, "editable_mode", False) or not os.path.isdir(CSRC):
            return
        target = os.path.join(self.build_lib, "tlengine", "kernels", "csrc")
        shutil.copytree(
            CSRC,
            target,
            dirs_exist_ok=True,
            ignore=lambda d, names: [
                n
                for n in names
                if not os.path.isdir(os.path.join(d, n)) and not n.endswith((".h", ".cuh", ".hpp", ".cpp", ".cu"))
            ],
        )


def _extensions():
    if os.environ.get("TLENGINE_BUILD_EXT") != "1" or not os.path.isfile(os.path.join(CSRC, "tlengine.cpp")):
        return [], {}
    from torch.utils.cpp_extension import BuildExtension, CppExtension, CUDAExtension  # needs torch in the build env

    kb = _kernels_build()
    with_cuda, why = kb.cuda_build_wanted()
    print(f"tlengine: building tlengine._C ({'CPU + CUDA' if with_cuda else 'CPU only'}: {why})")
    sources = [os.path.relpath(s, HERE) for s in kb.sources(with_cuda, root=CSRC)]
    cflags = kb.cxx_flags(jit=False)
    common = dict(include_dirs=[CSRC], extra_link_args=kb.ld_flags())
    if with_cuda:
        arch_list = kb.cuda_arch_list()
        if arch_list is not None:
            os.environ["TORCH_CUDA_ARCH_LIST"] = arch_list
        ext = CUDAExtension(
            "tlengine._C",
            sources,
            define_macros=[("TLENGINE_WITH_CUDA", None)],
            extra_compile_args={"cxx": cflags, "nvcc": kb.nvcc_flags()},
            **common,
        )
    else:
        ext = CppExtension("tlengine._C", sources, extra_compile_args={"cxx": cflags}, **common)
    return [ext], {"build_ext": BuildExtension}


ext_modules, cmdclass = _extensions()
setup(ext_modules=ext_modules, cmdclass={"build_py": BuildPyWithSources, **cmdclass})
