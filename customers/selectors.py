"""Named reads of customers that the API and the admin share.

Each is written to be served by an index (see `Customer.Meta.indexes` and migration 0002).
"""

import uuid

from django.db.models import Q, QuerySet, Value
from django.db.models.functions import Lower
from django.db.models.lookups import Exact

from customers.models import DELETED, LIVE

# Shorter words have no trigram to look up inside a name; they match its start instead.
MIN_INFIX_LENGTH = 3


def with_email(queryset: QuerySet, email: str) -> QuerySet:
    """Customers whose email equals `email`, ignoring case.

    Live and deleted customers each have their own partial LOWER(email) index; naming both
    conditions lets PostgreSQL read the two (a BitmapOr) instead of scanning the table.
    """
    same = Exact(Lower("email"), Lower(Value(email)))
    return queryset.filter((Q(same) & LIVE) | (Q(same) & DELETED))


def matching_name(queryset: QuerySet, text: str) -> QuerySet:
    """Customers whose first or last name holds every word of `text`, ignoring case.

    Words of three characters or more match anywhere in a name, shorter ones only at
    its start; both are served by the trigram indexes on UPPER(name).
    """
    for word in text.split():
        lookup = "icontains" if len(word) >= MIN_INFIX_LENGTH else "istartswith"
        queryset = queryset.filter(Q(**{f"first_name__{lookup}": word}) | Q(**{f"last_name__{lookup}": word}))
    return queryset


def matching_admin_search(queryset: QuerySet, term: str) -> QuerySet:
    """The admin's search box: an exact customer id, an exact email, or else a name search."""
    term = term.strip()
    try:
        return queryset.filter(customer_id=uuid.UUID(term))
    except ValueError:
        pass
    if "@" in term:
        return with_email(queryset, term)
    return matching_name(queryset, term)
