"""`siteview-payments api|worker`: run one process type of the payments service."""

from __future__ import annotations

from siteview_common.cli import run_service
from siteview_payments.bootstrap import create_api, create_worker
from siteview_payments.settings import PaymentsSettings


def main() -> None:
    run_service("payments", PaymentsSettings, api=create_api, worker=create_worker)


if __name__ == "__main__":
    main()
