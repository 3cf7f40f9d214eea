"""Deterministic synthetic people for ``POST /_sandbox/seed``.

Why deterministic: the Dynamics sandbox seeds the same e-mail patterns, so the two systems overlap on
known people. The first ``overlap_leads`` people get ``lead{i:05d}@example.com``, the next
``overlap_contacts`` get ``contact{i:05d}@example.com`` (``i`` counts from 0 inside each group), the rest
``person{i:05d}@example.com`` (also from 0). Names, phone, title, company and source come from a
``random.Random(seed)`` over small lists, so the same arguments always give the same people.
"""

from __future__ import annotations

import random
from collections.abc import Iterator

SEED_COLUMNS: tuple[str, ...] = ("email", "firstName", "lastName", "phone", "title", "company", "leadSource")

FIRST_NAMES = (
    "Ana", "Ben", "Chloe", "David", "Elena", "Farid", "Grace", "Hiro", "Ines", "Jonas", "Kara", "Liam",
    "Mina", "Noah", "Olga", "Pablo", "Quinn", "Rosa", "Sami", "Tara", "Umar", "Vera", "Wen", "Yara", "Zoe",
)
LAST_NAMES = (
    "Adams", "Bauer", "Costa", "Dubois", "Evans", "Fischer", "Garcia", "Hansen", "Ivanova", "Jensen",
    "Kim", "Larsen", "Moreau", "Novak", "Okafor", "Patel", "Quiroga", "Rossi", "Silva", "Tanaka",
    "Umarov", "Varga", "Weber", "Xu", "Young", "Zhang",
)
TITLES = (
    "CEO", "CTO", "Marketing Manager", "Sales Director", "Engineer", "Analyst", "Consultant",
    "Product Manager", "Operations Lead", "Buyer",
)
COMPANIES = (
    "Acme Corp", "Globex", "Initech", "Umbrella Ltd", "Stark Industries", "Wayne Enterprises",
    "Hooli", "Vandelay Imports", "Soylent GmbH", "Tyrell Systems", "Cyberdyne", "Wonka Foods",
)
SOURCES = ("Website", "Trade Show", "Webinar", "Referral", "Paid Search", "List Import")


def email_for(index: int, overlap_leads: int, overlap_contacts: int) -> str:
    if index < overlap_leads:
        return f"lead{index:05d}@example.com"
    if index < overlap_leads + overlap_contacts:
        return f"contact{index - overlap_leads:05d}@example.com"
    return f"person{index - overlap_leads - overlap_contacts:05d}@example.com"


def people(count: int, overlap_leads: int, overlap_contacts: int, seed: int) -> Iterator[tuple[str, ...]]:
    """Rows in :data:`SEED_COLUMNS` order."""
    rng = random.Random(seed)
    for i in range(count):
        yield (
            email_for(i, overlap_leads, overlap_contacts),
            rng.choice(FIRST_NAMES),
            rng.choice(LAST_NAMES),
            f"+1-555-{rng.randrange(10000):04d}",
            rng.choice(TITLES),
            rng.choice(COMPANIES),
            rng.choice(SOURCES),
        )
