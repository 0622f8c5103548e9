"""The builtin text-classification plugin: task ``text-classification``.

Modules: :mod:`.encoders` (BERT-family encoders, the ``minilm-l6`` weights),
:mod:`.datasets` (``TextSamples``, registration), :mod:`.text_file` and
:mod:`.chatterbot` (the two datasets), :mod:`.splits`,
:mod:`.batches` (tokenised texts, dynamic padding, length buckets), :mod:`.model`
(encoder + masked pooling + head), :mod:`.task`, :mod:`.metrics` and :mod:`.reports`,
:mod:`.tfidf` (the TF-IDF + logistic-regression baseline arm), :mod:`.plugin` (hooks).
"""
