"""Every example in one app: ``unbroken serve examples/demo.py``.

The tour of them is README.md's "A 5-minute tour with curl" (tests/e2e/test_readme_tour.py runs it).

The example modules are siblings of this file; ``unbroken serve`` puts this directory on
``sys.path``, so they import by name.
"""

import greeter
import notifications
import session_eviction
import travel_saga
import user_signup

import unbroken as restate

app = restate.app(
    [
        greeter.greeter,
        greeter.counter,
        user_signup.signup,
        travel_saga.trip,
        travel_saga.ledger,
        notifications.notifications,
        notifications.orders,
        session_eviction.session,
    ]
)
