"""Push a saved model directory to the Hugging Face Hub, then load it back from the Hub.

    python examples/push_to_hub.py outputs/number-words your-name/number-words [--private]

The directory is one written by ``model.save_pretrained(dir, tokenizer=...)`` (``vanilla-transformer train``
writes one). The token comes from ``HF_TOKEN`` or ``huggingface-cli login``; ``--hub_endpoint`` points at
another Hub (a mirror, a local test server) and is the same as setting ``HF_ENDPOINT``.
"""

import argparse
import os
import sys


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model_dir", help="a directory written by save_pretrained")
    parser.add_argument("repo_id", help="the Hub repo to push to, e.g. your-name/my-model")
    parser.add_argument("--private", action="store_true", help="create the repo private")
    parser.add_argument("--revision", default=None, help="branch to push to (default: main)")
    parser.add_argument("--commit_message", default=None)
    parser.add_argument("--hub_endpoint", default=None, help="Hub URL (default: HF_ENDPOINT or huggingface.co)")
    parser.add_argument("--no_reload", action="store_true", help="do not load the pushed model back")
    args = parser.parse_args(argv)

    # huggingface_hub reads HF_ENDPOINT when it is imported: set it before importing anything that imports it.
    if args.hub_endpoint:
        os.environ["HF_ENDPOINT"] = args.hub_endpoint.rstrip("/")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

    from huggingface_hub.errors import HfHubHTTPError

    from vanilla_transformer import AutoModel, CheckpointError
    from vanilla_transformer.hub import load_tokenizer
    from vanilla_transformer.hub_files import describe_http_error

    try:
        model = AutoModel.from_pretrained(args.model_dir)
        tokenizer = load_tokenizer(args.model_dir)
        print(f"loaded {type(model).__name__} ({model.num_parameters():,} parameters) from {args.model_dir}"
              f"{' with its tokenizer' if tokenizer is not None else ''}")
        info = model.push_to_hub(args.repo_id, private=args.private, revision=args.revision,
                                 commit_message=args.commit_message, tokenizer=tokenizer)
        print(f"pushed to {args.repo_id}: commit {info.oid}\n  {info.commit_url}")
        if not args.no_reload:
            again = AutoModel.from_pretrained(args.repo_id, revision=info.oid)
            same = all((a.numpy() == b.numpy()).all() for a, b in
                       zip(model.named_variables().values(), again.named_variables().values()))
            print(f"reloaded from the Hub at {info.oid[:12]}: weights identical = {same}")
            if tokenizer is not None:
                pulled = load_tokenizer(args.repo_id, revision=info.oid)
                same_vocab = pulled is not None and pulled.get_vocab() == tokenizer.get_vocab()
                print(f"tokenizer pulled with it: vocabulary identical = {same_vocab}")
                same = same and same_vocab
            if not same:
                return 1
    except (CheckpointError, HfHubHTTPError) as err:  # one readable line, no traceback
        refused = not isinstance(err, CheckpointError)
        message = f"the Hub refused {args.repo_id} {describe_http_error(err)}" if refused else err
        print(f"error: {message}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
