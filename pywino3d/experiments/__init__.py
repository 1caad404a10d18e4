"""Reproduction experiments for pywino3d (not imported by ``import pywino3d``).

Run them with ``python -m pywino3d experiment`` (see ``--help``).  Needs torch,
scikit-learn, matplotlib, tqdm and (for ``--segmentation``) MONAI
(``pip install "pywino3d[experiment]"``).

Modules
-------
data
    The moving-digit video clips.
volumes
    Noisy 3-D volumes of tall and flat ellipsoids (segmentation that needs depth); Dice.
models
    The small 3-D CNNs (spatial, Winograd, low-rank Winograd convolutions).
training
    Training, evaluation, pruning with fine-tuning, timing.
stats
    Intervals, paired tests, learning-rate choice with its margin, agreement of passes.
runner
    What the studies share to run: the resumable results file, the job phases, the machine record.
reproduction
    The low-rank training / column pruning reproduction and its report.
pruning_study
    One-shot pruning of a trained classifier (transform-aware score and refit).
segmentation
    3-D segmentation: pruned BasicUNets against thinner ones at matched time.
cli
    The command line (``python -m pywino3d experiment``).
"""
