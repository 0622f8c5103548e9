"""Builds the optional C++/CUDA extension ``tlengine._C`` ahead of time.

Plain ``pip install -e .`` builds nothing native (the engine JIT-builds the extension on
first use, or falls back to the pure-PyTorch reference ops). To build it at install time:

    TLENGINE_BUILD_EXT=1 pip install -e . --no-build-isolation
"""

import os

from setuptools import setup

ext_modules, cmdclass = [], {}
if os.environ.get("TLENGINE_BUILD_EXT") == "1" and os.path.isdir("csrc") and any(
    f.endswith(".cpp") for _, _, fs in os.walk("csrc") for f in fs
):
    from torch.utils.cpp_extension import BuildExtension, CppExtension  # needs torch in the build env

    sources = [os.path.join(d, f) for d, _, fs in os.walk("csrc") for f in fs if f.endswith(".cpp")]
    ext_modules = [CppExtension("tlengine._C", sources, include_dirs=[os.path.abspath("csrc")])]
    cmdclass = {"build_ext": BuildExtension}

setup(ext_modules=ext_modules, cmdclass=cmdclass)
