"""The pieces of ``examples/run_translation.py``, one module per step of its recipe.

==================  ==============================================================================================
module              what
==================  ==============================================================================================
``data``            reading the parallel text, tokenizing it, and batching it (token budget, packed rows,
                    BPE-dropout views), placed for the devices that split the batches
``distribution``    where the run computes (``--strategy`` on TensorFlow, ``--distribution`` on JAX) and where
                    each process writes
``training``        precision, model and tokenizer, the paper's optimizer and learning-rate schedule, and the
                    resumable fit with its per-epoch BLEU, checkpoints and time budget
``selection``       what is kept after training: checkpoint averaging, then the decoding chosen on validation
                    (length penalty, beam or MBR), and ensembles with other saved models
``report``          BLEU and chrF with sacreBLEU, learning-curve plots, the model card, ``results.json`` and the
                    saved model
==================  ==============================================================================================

The script puts ``examples/`` on ``sys.path``, so these import as ``translation.<module>`` (and ``_common``).
"""
