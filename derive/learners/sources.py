"""Where the seed questions come from: the README and `derive explain` name them by these."""

SOURCES = {
    "000": "a DeepLearning.AI (Coursera Deep Learning Specialization) forum thread on normalizing hidden "
           "layers: how can backprop go through the normalization step?",
    "001": "Frederik Kratzert, \"Understanding the backward pass through Batch Normalization Layer\" "
           "(blog post on CS231n assignment 2, 2016)",
    "002": "a write-up on normalizing A[l] vs Z[l], in the features x batch layout",
    "003": "Paras Dahal's deepnet notes on batch normalization (https://github.com/parasdahal/deepnet)",
    "004": "CrossValidated question 215458, \"What is an explanation of the example of why batch "
           "normalization has to be done with some care?\" (https://stats.stackexchange.com/q/215458)",
}


def cite(seeds: str) -> str:
    """'seed 000 (a DeepLearning.AI ...)' for a seed number; ranges are returned as they are."""
    return f"{seeds}: {SOURCES[seeds]}" if seeds in SOURCES else seeds
