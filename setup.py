"""ibfleet: an automated trading fleet for Interactive Brokers.

Builds the Cython hot path in core/ and installs the `ibfleet` console script.
Exact dependency pins live in requirements.txt; install_requires states what the code needs.
"""
from pathlib import Path

from Cython.Build import cythonize
from setuptools import Extension, find_packages, setup

HERE = Path(__file__).parent

extensions = [
    Extension(
        f"core.{pyx.stem}",
        [str(pyx.relative_to(HERE))],
        extra_compile_args=["-O3"],
        libraries=["z"] if pyx.stem == "replay" else [],  # replay checks record CRCs (zlib)
    )
    for pyx in sorted((HERE / "core").glob("*.pyx"))
]

setup(
    name="ibfleet",
    version="0.1.0",
    description="A fleet of trading processes for Interactive Brokers on a ZeroMQ bus",
    license="GPL-3.0-or-later",
    python_requires=">=3.11",
    packages=find_packages(include=["services", "services.*", "core", "core.*", "proto", "proto.*"]),
    package_data={"core": ["*.pxd", "*.pyx"], "services": ["**/*.toml"]},
    ext_modules=cythonize(
        extensions,
        language_level=3,
        compiler_directives={"boundscheck": False, "wraparound": False, "cdivision": True},
        annotate=False,
    ),
    install_requires=[
        "ibapi-stable==10.50.2",
        "pyzmq>=26",
        "msgpack>=1.0",
        "msgspec>=0.18",
        "supervisor>=4.2",
        "psutil>=5.9",
        "tomli-w>=1.0",
    ],
    # pip install .[report]: report.html's interactive charts (bokeh, its JavaScript inlined)
    extras_require={"report": ["bokeh>=3.4"]},
    entry_points={"console_scripts": ["ibfleet = services.cli:main"]},
    zip_safe=False,
)
