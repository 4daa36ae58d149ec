"""`siteview-users api|worker`: run one process type of the users service."""

from __future__ import annotations

from siteview_common.cli import run_service
from siteview_users.bootstrap import create_api, create_worker
from siteview_users.settings import UsersSettings


def main() -> None:
    run_service("users", UsersSettings, api=create_api, worker=create_worker)


if __name__ == "__main__":
    main()
