"""The learning: classifiers on embeddings, choosing them, judging them, and training ELMo itself.

``classifier`` (the logistic regression, Spark ML or scikit-learn, and its saved folder), ``selection`` (choosing
the layer, pooling and regularisation by cross-validation), ``baseline`` (the TF-IDF baseline and the quality
lines), ``report`` (the pipeline's HTML and JSON report), ``bilm_training`` (training a biLM from a corpus).

May import: ``jobs.platform``, ``jobs.lake`` and this package (and ``udfs``). Never a job.
"""
