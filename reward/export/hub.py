"""Pushing a verified export to the Hub.
"""

from __future__ import annotations

from pathlib import Path

from ..errors import ExportError
from ..rundir import EXPORT_INFO, TRAIN_PROMPTS


def push_export(folder: Path, repo_id: str, private: bool = False, revision: str | None = None,
                share_train_prompt_hashes: bool = False, token: str | None = None) -> str:
    """``create_repo`` + ``upload_folder``. The token is ``token`` (a recipe's ``hub_token``, held in
    memory only), else ``HF_TOKEN`` or the login cache; it is never printed or written. Re-running after a
    failure re-uploads only what the Hub does not have.

    The training-prompt hashes stay local unless ``share_train_prompt_hashes``: anyone holding a
    prompt could test whether it was trained on, which private training data must not allow."""
    from huggingface_hub import HfApi

    if not (Path(folder) / EXPORT_INFO).is_file():
        raise ExportError(f"{folder} is not a complete rewardkit export; run `rewardkit export` first")
    api = HfApi(token=token)
    try:
        api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
        if revision:
            api.create_branch(repo_id, branch=revision, exist_ok=True)
        commit = api.upload_folder(folder_path=str(folder), repo_id=repo_id, revision=revision,
                                   commit_message="Upload reward model exported with rewardkit",
                                   ignore_patterns=None if share_train_prompt_hashes else [TRAIN_PROMPTS])
    except Exception as exc:
        # The local export is complete; say how to resume, without echoing request headers (tokens).
        raise ExportError(f"push to {repo_id} failed ({type(exc).__name__}); the local export in {folder} is "
                          f"complete: re-run the same command to resume the upload.") from None
    url = getattr(commit, "commit_url", None) or str(commit)
    print(f"pushed {folder} → {repo_id}" + (f"@{revision}" if revision else ""))
    return url
