"""dnc: divide one network into S co-trained members (SplitNet) and measure the trade-off.

The pure PyTorch library: config, data and views, model registry and the divide rule,
co-training losses, the training engine, evaluation and FLOP accounting. It imports no
orchestration or tracking library (Prefect, MLflow, Optuna, DVC live in `pipelines/`).
"""

__version__ = "0.1.0"
