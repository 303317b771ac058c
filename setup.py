"""Builds the Python module with the project's CMake: the _tagwire extension
links tagwire's static library, so the wheel needs no libtagwire.so."""

import os
import pathlib
import re
import shutil
import subprocess
import sys

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

ROOT = pathlib.Path(__file__).resolve().parent


def version():
    text = (ROOT / "CMakeLists.txt").read_text()
    return re.search(r"project\(tagwire VERSION ([0-9.]+)", text).group(1)


class CMakeBuild(build_ext):
    def build_extension(self, ext):
        build = pathlib.Path(self.build_temp).resolve() / "cmake"
        build.mkdir(parents=True, exist_ok=True)
        subprocess.check_call([
            "cmake", "-S", str(ROOT), "-B", str(build),
            "-DCMAKE_BUILD_TYPE=Release", "-DTW_TESTS=OFF",
            "-DTW_WERROR=OFF", "-DPython3_EXECUTABLE=" + sys.executable,
        ])
        subprocess.check_call([
            "cmake", "--build", str(build), "--target", "_tagwire",
            "-j", str(os.cpu_count() or 2),
        ])
        built = sorted((build / "python" / "tagwire").glob("_tagwire*.so"))
        if not built:
            raise RuntimeError("the CMake build made no _tagwire module")
        dest = pathlib.Path(self.get_ext_fullpath(ext.name))
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(built[0], dest)


setup(
    version=version(),
    packages=["tagwire", "tagwire.compat"],
    package_dir={"": "python"},
    package_data={"tagwire": ["py.typed", "*.pyi"]},
    ext_modules=[Extension("tagwire._tagwire", sources=[])],
    cmdclass={"build_ext": CMakeBuild},
    zip_safe=False,
    # Not build/: that is where `make` keeps its CMake build.
    options={"build": {"build_base": "_build/python"}},
)
