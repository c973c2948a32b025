"""TURN: robust fine-tuning of pre-trained image models under noisy labels (IJCAI 2023).

A plain library (numpy / torch in, numpy / torch / files out) behind TURN Studio's app and
the `turn` command. It never imports Streamlit.
"""

__version__ = "0.1.0"
