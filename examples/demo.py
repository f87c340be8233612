"""Every example in one app: ``unbroken serve examples/demo.py`` (see docs/tour.md).

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
