"""Reproduction experiments for pywino3d (not imported by ``import pywino3d``).

Run them with ``python -m pywino3d experiment`` (see ``--help``).  Needs torch,
scikit-learn, matplotlib and tqdm (``pip install "pywino3d[experiment]"``).

Modules
-------
data
    The moving-digit video clips.
models
    The small 3-D CNNs (spatial, Winograd, low-rank Winograd convolutions).
training
    Training, evaluation, pruning with fine-tuning, timing.
reproduction
    The low-rank training / column pruning reproduction and its report.
cli
    The command line (``python -m pywino3d experiment``).
"""
