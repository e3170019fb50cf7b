"""Save or load one tiny model of every class on the backend of KERAS_BACKEND; write logits and decoded ids.

    KERAS_BACKEND=jax python tests/scripts/backend_roundtrip.py save|load DIRECTORY [save|load DIRECTORY ...]

``save`` builds each class from a fixed seed and saves it to DIRECTORY/<class>; ``load`` loads them. Both write
DIRECTORY/<class>.<backend>.<action>.npz with the logits of fixed inputs (and greedy / beam ids for the classes
that decode), so a test can compare backends. Several action / directory pairs run in one process (one start-up
of the backend). Run on JAX or PyTorch, it makes TensorFlow unimportable first.
"""

import sys

import keras
import numpy as np

from vanilla_transformer import (TransformerConfig, TransformerEncoderModel, TransformerForCausalLM,
                                 TransformerForMaskedLM, TransformerForSeq2SeqLM, TransformerForSequenceClassification)

SIZES = dict(vocab_size=50, d_model=16, num_heads=2, d_ff=32, dropout=0.0, max_position_embeddings=32)
CONFIGS = {
    TransformerForSeq2SeqLM: dict(num_encoder_layers=1, num_decoder_layers=1),
    TransformerForCausalLM: dict(architecture="decoder", num_encoder_layers=0, num_decoder_layers=2,
                                 position_embedding="learned", bos_token_id=1, eos_token_id=2),
    TransformerEncoderModel: dict(architecture="encoder", num_encoder_layers=2, num_decoder_layers=0,
                                  type_vocab_size=2, add_pooler=True),
    TransformerForMaskedLM: dict(architecture="encoder", num_encoder_layers=1, num_decoder_layers=0),
    TransformerForSequenceClassification: dict(architecture="encoder", num_encoder_layers=1, num_decoder_layers=0,
                                               add_pooler=True, num_labels=3),
}
IDS = np.array([[5, 6, 7, 2, 0], [8, 9, 10, 11, 2]], "int32")
MASK = (IDS != 0).astype("int32")


def outputs(model) -> dict:
    inputs = {"input_ids": IDS, "attention_mask": MASK}
    if isinstance(model, TransformerForSeq2SeqLM):
        inputs["decoder_input_ids"] = np.array([[1, 5, 6], [1, 8, 9]], "int32")
    result = {"logits": keras.ops.convert_to_numpy(model(inputs))}
    if hasattr(model, "generate"):
        result["greedy"] = model.generate(IDS, MASK, max_new_tokens=6)
        result["beam"] = model.generate(IDS, MASK, max_new_tokens=6, num_beams=3)
    return result


def main(action: str, directory: str) -> None:
    backend = keras.backend.backend()
    for cls, fields in CONFIGS.items():
        path = f"{directory}/{cls.__name__}"
        if action == "save":
            keras.utils.set_random_seed(0)
            model = cls(TransformerConfig(**SIZES, **fields)).build_weights()
            model.save_pretrained(path)
        else:
            model = cls.from_pretrained(path)
        np.savez(f"{path}.{backend}.{action}.npz", names=np.array(sorted(model.named_variables())),
                 weights=len(model.weights), **outputs(model))


if __name__ == "__main__":
    if keras.backend.backend() != "tensorflow":
        sys.modules["tensorflow"] = None  # as without TensorFlow installed: saving and loading must not need it
    for action, directory in zip(sys.argv[1::2], sys.argv[2::2], strict=True):
        main(action, directory)
