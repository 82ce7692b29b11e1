"""devinterp inside other training frameworks: thin callbacks that drive a `devinterp.Monitor`.

    hf.py    `DevinterpCallback`, a `transformers.TrainerCallback` (pip install 'devinterp[hf]')
"""
