"""What every SiteView service shares: settings, event contracts, auth, wiring, observability.

No service's business rules live here, and nothing here imports a service.
"""
