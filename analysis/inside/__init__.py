"""Looking inside the models (``vlab.analysis.inside``): what a model computes, read off its
weights and activations. Imports torch, so nothing in ``vlab.analysis`` that the report or
``vlab report`` loads imports this package.

``hidden_attention``: Mamba's selective SSM written as a data-dependent attention matrix over
past tokens.
"""
