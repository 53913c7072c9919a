"""Generate the bundled demo dataset `data/support_tickets.csv` (made by this project, no third-party text).

Customer-support messages with 6 labels; a message can carry several. Each label has a bank of
phrases written for this project; a message joins 1-3 labels' phrases with neutral filler, and
some messages carry no label at all. About 6% of labels are flipped so the task is not trivial.

    python data/make_demo.py            # rewrites data/support_tickets.csv (seeded, reproducible)
"""
from __future__ import annotations

import csv
import random
from pathlib import Path

LABELS = ["billing", "shipping", "account", "bug", "praise", "refund"]

PHRASES = {
    "billing": ["I was charged twice this month", "the invoice shows the wrong amount", "why did my card get billed again",
                "my subscription price went up without notice", "there is an extra fee on my statement",
                "the payment failed but the money left my account", "please fix the billing on my plan",
                "I need a copy of my last invoice", "the tax on the bill looks wrong"],
    "shipping": ["my package has not arrived yet", "the parcel is stuck in transit", "delivery was late by a week",
                 "the courier left the box at the wrong address", "tracking has not updated for days",
                 "the order shipped to my old address", "when will my order be delivered",
                 "the box arrived crushed", "shipping took far too long"],
    "account": ["I cannot log in to my account", "the password reset email never comes", "please change the email on my profile",
                "my account got locked after two tries", "how do I delete my account", "two factor codes do not work",
                "I want to update my username", "the login page keeps saying wrong password", "merge my two profiles please"],
    "bug": ["the app crashes when I open settings", "the page shows an error 500", "the button does nothing when I click it",
            "the screen freezes after the update", "search returns a blank page", "the app closes by itself on start",
            "images fail to load in the gallery", "the export feature is broken", "sync throws a strange error"],
    "praise": ["thank you so much for the quick help", "your support team is wonderful", "great service as always",
               "I love the new design", "the agent was very friendly and kind", "amazing product, keep it up",
               "really happy with how fast you answered", "best customer service I have had", "you folks are fantastic"],
    "refund": ["I want my money back", "please refund the order", "how long does a refund take",
               "I returned the item but got no refund yet", "cancel and refund my purchase", "I asked for a refund last week",
               "send the refund to my original card", "the refund amount is too small", "I would like a full refund"],
}

FILLER = ["hello", "hi there", "good morning", "quick question", "order number 4471", "as I said before", "sorry to bother you",
          "this is my third message", "see the screenshot", "it happened again today", "can someone look into this",
          "I use the android app", "on the website", "my friend has the same issue", "please reply soon", "regards",
          "thanks in advance", "not sure who to ask", "last tuesday", "for the second time"]


def make(n: int = 3000, seed: int = 0) -> list[dict]:
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        r = rng.random()
        k = 0 if r < 0.06 else 1 if r < 0.62 else 2 if r < 0.92 else 3
        labs = rng.sample(LABELS, k)
        parts = [rng.choice(PHRASES[lab]) for lab in labs]
        parts += rng.sample(FILLER, rng.randint(0 if labs else 1, 3))
        rng.shuffle(parts)
        text = parts[0]
        for p in parts[1:]:  # people join sentences in many ways
            text += rng.choice([". ", ". ", ", ", " and ", "! ", " - "]) + p
        if rng.random() < 0.7:
            text = text[0].upper() + text[1:]
        text += rng.choice(["", ".", ".", "!", "?", "..."])
        noisy = set(labs)
        for lab in LABELS:  # label noise: annotators disagree sometimes
            if rng.random() < 0.01:
                noisy ^= {lab}
        labs_out = [lab for lab in LABELS if lab in noisy]
        row = {"id": f"t{i:05d}", "text": text, "labels": ";".join(labs_out)}
        row.update({lab: int(lab in noisy) for lab in LABELS})
        rows.append(row)
    return rows


if __name__ == "__main__":
    out = Path(__file__).with_name("support_tickets.csv")
    rows = make()
    with open(out, "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    print(f"wrote {len(rows)} rows to {out}")
