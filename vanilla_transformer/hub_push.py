"""Pushing to the Hub: a model, or a folder already saved, uploaded to a Hub repo in one commit.

:func:`push_to_hub` saves a model with :func:`~vanilla_transformer.hub.save_pretrained` and uploads the
folder; :func:`push_folder_to_hub` (the ``vanilla-transformer push`` command) uploads a saved model or LoRA
adapter folder. Either way the repo is created if needed, weight files of an earlier push that the new one
does not write are deleted in the same commit, and a refused commit leaves the repo unchanged.
"""

from __future__ import annotations

import re
import tempfile
from pathlib import Path

from huggingface_hub import constants

from .adapter_files import ADAPTER_CONFIG_NAME, ADAPTER_WEIGHTS_NAME
from .hub import save_pretrained
from .hub_files import CheckpointError, describe_http_error
from .weight_files import CONFIG_NAME, DEFAULT_MAX_SHARD_SIZE, WEIGHTS_INDEX_NAME, WEIGHTS_NAME

#: files of a repo that a new push replaces (stale shards of an earlier push would otherwise remain)
WEIGHT_FILE_PATTERN = re.compile(r"^model(-\d{5}-of-\d{5})?\.safetensors(\.index\.json)?$")


def push_to_hub(model, repo_id: str, *, private: bool = False, token=None,
                commit_message: str | None = None, revision: str | None = None, create_pr: bool = False,
                max_shard_size: int | str | None = DEFAULT_MAX_SHARD_SIZE, tokenizer=None,
                model_card: dict | None = None, commit_description: str | None = None):
    """Create ``repo_id`` if needed and upload what :func:`~vanilla_transformer.hub.save_pretrained` writes,
    in one commit.

    - ``private``: visibility of a repo created here (an existing repo keeps its own);
    - ``token``: defaults to ``HF_TOKEN`` / the saved login; the Hub is ``HF_ENDPOINT``;
    - ``revision``: the branch to commit to (created from ``main`` when missing);
    - ``create_pr``: open a pull request (``refs/pr/N``) instead of committing to the branch;
    - ``max_shard_size``: shard the weights above this size, as transformers does;
    - ``tokenizer``: saved and pushed beside the model (``load_tokenizer(repo_id)`` gets it back);
    - ``model_card``: extra model card information (see
      :func:`~vanilla_transformer.model_card.render_model_card`).

    Weight files of an earlier push that the new one does not write (old shards) are deleted in the same
    commit. Files that did not change are not uploaded again; when nothing changed no commit is made.
    Returns huggingface_hub's ``CommitInfo`` (``.oid`` is the commit id, ``.pr_url`` the pull request).

    Example:
        The push needs the Hub and a write token; what it uploads is what :func:`save_pretrained` writes
        (with ``repo_id`` in the model card), which can be checked offline:

        >>> import os, tempfile
        >>> from vanilla_transformer import TransformerForSeq2SeqLM
        >>> from vanilla_transformer.hub_push import push_to_hub
        >>> model = TransformerForSeq2SeqLM(example_config)
        >>> folder = model.save_pretrained(tempfile.mkdtemp(), model_card={"repo_id": "user/tiny-model"})
        >>> sorted(os.listdir(folder))
        ['README.md', 'config.json', 'generation_config.json', 'model.safetensors']
        >>> "user/tiny-model" in (folder / "README.md").read_text()
        True
        >>> info = push_to_hub(model, "user/tiny-model", private=True)  # doctest: +SKIP
        >>> info.oid  # doctest: +SKIP
        '...'
    """
    from huggingface_hub import HfApi

    api = HfApi(token=token, library_name="vanilla-transformer")
    repo_id = api.create_repo(repo_id, private=private, exist_ok=True).repo_id
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "model"
        save_pretrained(model, folder, tokenizer=tokenizer, max_shard_size=max_shard_size,
                        model_card={"repo_id": repo_id, **(model_card or {})})
        return _commit_folder(api, folder, repo_id, revision=revision, create_pr=create_pr,
                              commit_message=commit_message or f"Upload {type(model).__name__}",
                              commit_description=commit_description)


def push_folder_to_hub(folder, repo_id: str, *, private: bool = False, token=None, commit_message=None,
                       revision=None, create_pr: bool = False, commit_description: str | None = None):
    """Upload an already saved model directory in one commit (the ``vanilla-transformer push`` command).

    ``folder`` must hold ``config.json`` and safetensors weights, or be a LoRA adapter (``adapter_config.json``
    and ``adapter_model.safetensors``, see :func:`~vanilla_transformer.adapter_files.save_adapter`) (checked
    before anything is sent, raising :class:`CheckpointError`); every file in it is uploaded, and weight files
    of an earlier push that ``folder`` lacks are deleted. The other arguments are those of :func:`push_to_hub`.
    Returns huggingface_hub's ``CommitInfo``.

    Example:
        >>> import tempfile
        >>> from vanilla_transformer.hub_push import push_folder_to_hub
        >>> try:  # refused locally, before any network access
        ...     push_folder_to_hub(tempfile.mkdtemp(), "user/tiny-model")
        ... except ValueError as err:
        ...     print(type(err).__name__, str(err).endswith("is not a saved model directory (no config.json)"))
        CheckpointError True
        >>> info = push_folder_to_hub("outputs/number-words", "user/number-words")  # doctest: +SKIP
    """
    from huggingface_hub import HfApi

    folder = Path(folder)
    is_adapter = (folder / ADAPTER_CONFIG_NAME).is_file()
    if is_adapter and not (folder / ADAPTER_WEIGHTS_NAME).is_file():
        raise CheckpointError(f"{folder} has {ADAPTER_CONFIG_NAME} but no {ADAPTER_WEIGHTS_NAME}")
    if not is_adapter and not (folder / CONFIG_NAME).is_file():
        raise CheckpointError(f"{folder} is not a saved model directory (no {CONFIG_NAME})")
    if not is_adapter and not ((folder / WEIGHTS_NAME).is_file() or (folder / WEIGHTS_INDEX_NAME).is_file()):
        raise CheckpointError(f"{folder} has no safetensors weights ({WEIGHTS_NAME} or {WEIGHTS_INDEX_NAME})")
    api = HfApi(token=token, library_name="vanilla-transformer")
    repo_id = api.create_repo(repo_id, private=private, exist_ok=True).repo_id
    return _commit_folder(api, folder, repo_id, revision=revision, create_pr=create_pr,
                          commit_message=commit_message or f"Upload {folder.resolve().name}",
                          commit_description=commit_description)


def _commit_folder(api, folder: Path, repo_id: str, *, revision, create_pr, commit_message, commit_description):
    """One ``create_commit``: every file of ``folder``, and deletions of stale weight files."""
    from huggingface_hub import CommitOperationAdd, CommitOperationDelete

    if revision is not None and not create_pr and revision != constants.DEFAULT_REVISION:
        api.create_branch(repo_id, branch=revision, exist_ok=True)
    files = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())
    operations = [CommitOperationAdd(path_in_repo=name, path_or_fileobj=str(folder / name)) for name in files]
    remote = api.list_repo_files(repo_id, revision=revision)
    operations += [CommitOperationDelete(path_in_repo=name) for name in remote
                   if WEIGHT_FILE_PATTERN.match(name) and name not in files]
    from huggingface_hub.errors import HfHubHTTPError

    try:
        return api.create_commit(repo_id, operations, commit_message=commit_message,
                                 commit_description=commit_description, revision=revision, create_pr=create_pr)
    except HfHubHTTPError as err:
        stage = "the upload check" if "preupload" in str(err) else "the commit"
        raise CheckpointError(f"push to {repo_id} failed during {stage} {describe_http_error(err)}; a commit is all "
                              f"or nothing, so the repo is unchanged and the local files are untouched: push again"
                              ) from err

