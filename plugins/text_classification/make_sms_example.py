"""Write ``pipelines/data/sms-example.tsv``: a small SMS-format example file made by the project.

Every message is invented here from hand-written templates and word lists (no real
messages, people, brands, web sites or phone numbers): ham is everyday personal texting
(plans, lateness, family, work, short replies, "u"/"2moro"/"lol" spellings, some of it
about money or with a phone number), spam is prize and lottery claims, premium-rate
"call" and "txt STOP" offers, ringtone subscriptions and fake bank or delivery alerts
(some of it written casually). Phone numbers come from the UK ranges Ofcom reserves
for drama (07700 900xxx, 01632 960xxx, 0808 157 0xxx, 0909 879 0xxx), web sites use the
reserved ``.example`` domain, so none can reach anyone.

The output is in the SMS Spam Collection's format: ``ham<TAB>text`` or ``spam<TAB>text``,
UTF-8, one message per line, no header, no duplicates (ignoring case and spacing); no
text contains a tab or starts with a quote, so it reads the same as ``format: sms`` and
as ``format: tsv``. Same seed -> same file. Regenerate with::

    python -m tlengine_plugins.text_classification.make_sms_example \\
        plugins/text_classification/pipelines/data/sms-example.tsv
"""

from __future__ import annotations

import argparse
import random
import re
from pathlib import Path

__all__ = ["HAM_TEMPLATES", "SPAM_TEMPLATES", "generate", "main"]

SEED = 20240611
TOTAL = 600
SPAM = 90  # 15%

# ----------------------------------------------------------------------------- templates
HAM_TEMPLATES: tuple[str, ...] = (
    "Hey {name}, are you coming to the {event} on {weekday}?",
    "Running {mins} mins late, sorry! See you at {place}",
    "I'm {activity}, will call you back later",
    "Can you pick up some {shopping} on the way home please",
    "What time does the {event} start?",
    "Ok see you at {time} then",
    "Did you get home ok last night?",
    "Sorry I missed your call, I was {activity}",
    "{relative} says dinner is at {time}, don't be late",
    "Do you fancy {food} tonight?",
    "Just got to {place}, where are you?",
    "Have you seen my {item}? Think I left it at yours",
    "Happy birthday {name}!! Hope you have an amazing day",
    "Can you lend me £{small} till friday? Will pay you back I promise",
    "I've sent you the £{small} for the tickets",
    "My new number is {mobile}, save it",
    "Call me on {mobile} when you land",
    "Good luck with the {event} tomorrow, you'll be great",
    "I'm so {feeling} today",
    "That's hilarious, {name} will love it",
    "Yeah that's fine, see you {day}",
    "Where are you? We're all at {place}",
    "Is the {event} still on for {day}?",
    "Don't forget to feed the cat before you go",
    "The train is delayed again, be there in {mins} mins",
    "Thanks for today, had a really good time",
    "Can't make it tonight, {relative} is ill. Sorry",
    "Did you finish the report? Boss wants it by {time}",
    "Meeting moved to {time}, same room as last week",
    "Are you still at work? I'm {feeling}",
    "Ok cool, text me when you're outside",
    "I'll be home about {time}, leave some {food} for me",
    "No way! Who told you that?",
    "Will you be free on {weekday}? Need help moving the sofa",
    "Got the job!!! Start on {weekday}",
    "Just woke up, what did I miss",
    "Remember to bring your {item} {day}",
    "Want to watch the match at {place}?",
    "Tell {name} I said hi",
    "Hope you feel better soon",
    "How much do I owe you for the {food}? Was it £{small}?",
    "The gas bill came, it's £{small} each this month",
    "Are you free {day}? Fancy a walk",
    "I won the pub quiz, £{small} and a box of chocolates",
    "{relative} wants to know if you're coming for Sunday lunch",
    "Text me the address please",
    "Just landed, call you in a bit",
    "The wifi is down again, can you ring the landlord on {landline}?",
    "Sorry, I think you've got the wrong number",
    "Urgent - can you call me asap, it's about {relative}",
    "Congrats on the new flat {name}!",
    "Have you got a spare charger? Mine's dead",
    "I'm outside",
    "Where did you park?",
    "Bus is packed, standing all the way",
    "Can we do {day} instead? Something came up",
    "Claim your coat, you left it at {place} lol",
    "{name} just rang, they're at {place} with {name2}",
    "I'll text you when I'm leaving {place}",
    "Did you book the table for {time}?",
    "Exam went ok I think, {feeling} now",
    "Great news about {name}, tell them congrats from me",
    "Can't talk now, {activity}",
    "Just paid the deposit, £{big} for the holiday, you owe me half",
    "My phone's about to die, meet you at {place} at {time}",
    "{name2} is having a {event} on {weekday}, you in?",
)

SPAM_TEMPLATES: tuple[str, ...] = (
    "URGENT! You have won a £{prize} prize. To claim call {premium} now. Claim code {code}. Valid 12hrs only",
    "Congratulations! Your mobile number has been selected for a £{prize} cash award. Call {premium} "
    "from a landline. T&Cs apply",
    "FREE entry into our weekly draw to win £{prize}. Text WIN to {short} now! 18+ T&C apply",
    "You have 1 new voicemail. Please call {premium} to listen",
    "Get the latest ringtones FREE this week! Reply TONE to {short}. £{weekly}/wk, txt STOP to end",
    "Your account has been suspended. Verify your details at {url} within 24 hours",
    "We could not deliver your parcel. Pay the £{fee} redelivery fee at {url}",
    "ALERT: unusual activity on your bank card. Call {premium} immediately to secure your account",
    "Hey its {girl}, saw ur profile and thought u looked cute ;) txt me back on {short} x {ppm}p/msg",
    "Final notice: you are entitled to a £{refund} tax refund. Claim at {url}",
    "Had an accident that wasn't your fault? You may be entitled to £{refund} compensation. Reply YES or STOP",
    "Your reward points expire today! Redeem them for a free gift at {url}",
    "Reply WIN to {short} to claim your guaranteed £{prize} voucher. {ppm}p/msg, txt STOP to opt out",
    "Want to meet local singles tonight? Txt DATE to {short}. 18+ only, {ppm}p per msg",
    "You are a WINNER! Call {premium} to claim your holiday for 2. PO Box {box}",
    "Dear customer, your mobile bill is overdue. Avoid disconnection, call {premium} now",
    "Thanks for joining Ringtone Club. You will be charged £{weekly}/wk. Txt STOP to {short} to cancel",
    "Last chance! Upgrade to a new camera phone FREE. Call {freephone} now",
    "Your loan of £{loan} has been approved, no credit checks. Reply YES to {short} to accept",
    "IMPORTANT: your PIN has been changed. If this was not you call {premium}",
    "u r a winner! ur mobile no. won £{prize} in our draw. call {premium} b4 midnite to claim",
    "Hi its {girl}, been trying to reach you! I have a message for you, call {premium} now",
    "Someone has a secret crush on you! To find out who txt CRUSH to {short}. {ppm}p/msg",
    "Your parcel is held at our depot. Confirm your address at {url} to arrange delivery",
    "Claim your FREE £{voucher} shopping voucher now! Visit {url} before it expires",
    "Double your mins and txts FREE on your next upgrade. Call {freephone} quote {code}",
    "Get {pct}% off all mobile deals this weekend only! Reply DEAL to {short}. STOP to end",
    "{girl} here, I'm bored and home alone. Call me on {premium} ;) £1.50/min",
    "Urgent: your delivery {code} failed. Reschedule at {url}. Reply STOP to opt out",
    "Guaranteed £{prize} cash or a holiday! Call {premium} to claim. Cost {ppm}p/min",
    "As a valued customer you have been awarded a £{voucher} bonus. Call {freephone} to claim",
    "omg just checked, ur number came up in our prize draw!! txt CLAIM to {short} 2 get ur £{prize}",
    "Free polyphonic ringtone for u! text POLY to {short}. subscription £{weekly}/wk, 16+",
    "Your mobile number has won our monthly draw, please call {premium} to collect. Ref {code}",
    "hey, r u free 2nite? i'm new in town & looking 4 fun. txt {girl} to {short} {ppm}p/msg",
    "Security notice: a payment of £{fee} was taken from your account. Not you? Call {premium}",
    "You've been chosen to test the latest smartphone for FREE! Reply TEST to {short}, T&Cs at {url}",
    "{day_upper} ONLY: win a £{prize} shopping spree! Text SHOP to {short}. {ppm}p/msg 18+",
)

# ----------------------------------------------------------------------------- word lists
NAMES = (
    "Sam", "Jo", "Mike", "Priya", "Tom", "Lucy", "Dan", "Becky", "Raj", "Emma",
    "Chris", "Kate", "Ben", "Gemma", "Olly", "Aisha", "Leo", "Hannah", "Jamie", "Zoe",
)  # fmt: skip
GIRLS = ("Jess", "Amber", "Chloe", "Nikki", "Stacey", "Tina", "Kelly", "Lexi")
WORDS: dict[str, tuple[str, ...]] = {
    "event": ("party", "match", "gig", "film", "meeting", "exam", "interview", "dinner", "bbq", "wedding", "quiz"),
    "weekday": ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"),
    "day": ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday", "tomorrow", "tonight"),
    "place": (
        "the pub",
        "the station",
        "the cafe",
        "the library",
        "the gym",
        "town",
        "the cinema",
        "uni",
        "work",
        "the park",
        "mum's",
        "the chippy",
        "the shops",
        "the bus stop",
        "the car park",
    ),  # fmt: skip
    "time": ("7", "7.30", "8", "half 6", "6ish", "10", "9.15", "noon", "3pm", "5:45", "1", "about 4"),
    "mins": ("5", "10", "15", "20", "30", "45"),
    "food": (
        "pizza",
        "curry",
        "chinese",
        "pasta",
        "fish and chips",
        "takeaway",
        "roast",
        "burgers",
        "noodles",
        "kebab",
    ),
    "shopping": ("milk", "bread", "eggs", "bin bags", "cat food", "teabags", "washing up liquid"),
    "item": ("keys", "charger", "wallet", "umbrella", "jacket", "headphones", "notes", "bag", "glasses"),
    "activity": (
        "revising",
        "watching tv",
        "at work",
        "on the bus",
        "in a meeting",
        "cooking",
        "driving",
        "asleep",
        "shopping",
        "at the gym",
        "in the shower",
        "on the phone to mum",
    ),  # fmt: skip
    "feeling": ("tired", "knackered", "bored", "starving", "ill", "stressed", "happy", "shattered"),
    "relative": ("Mum", "Dad", "Nan", "My sister", "My brother", "Grandad", "Auntie Sue", "My cousin"),
    "small": ("5", "10", "12.50", "20", "25", "30", "35", "40", "50", "8"),
    "big": ("150", "200", "240", "320", "400"),
    "prize": ("500", "1000", "2000", "5000", "250", "900", "1500", "10,000", "800", "3000"),
    "refund": ("213.50", "458.20", "167.00", "389.90", "1,250"),
    "fee": ("1.99", "2.99", "3.45", "0.99", "1.45", "4.20"),
    "weekly": ("1.50", "3", "4.50", "2", "5"),
    "ppm": ("150", "100", "50", "25", "120"),
    "loan": ("2,000", "5,000", "750", "10,000", "1,500"),
    "voucher": ("100", "250", "50", "500", "200"),
    "pct": ("20", "30", "40", "50", "70"),
}

ABBREVIATIONS: tuple[tuple[str, str], ...] = (
    (r"\byou're\b", "ur"), (r"\byou\b", "u"), (r"\byour\b", "ur"), (r"\btomorrow\b", "2moro"),
    (r"\btonight\b", "2nite"), (r"\bfor\b", "4"), (r"\bbefore\b", "b4"), (r"\blater\b", "l8r"),
    (r"\bgreat\b", "gr8"), (r"\bplease\b", "pls"), (r"\bthanks\b", "thx"), (r"\bare\b", "r"),
    (r"\bsee\b", "c"), (r"\btext\b", "txt"), (r"\bwhat\b", "wat"), (r"\bI'm\b", "im"),
    (r"\bdon't\b", "dont"), (r"\bcan't\b", "cant"), (r"\bminutes?\b", "mins"), (r"\btomorrow\b", "tmrw"),
)  # fmt: skip
ENDINGS = ("", "", "", " x", " xx", " :)", " lol", " ;-)", " haha", " cheers", "!", " :(", " ta", "...")


# ----------------------------------------------------------------------------- filling
def _number(rng: random.Random, kind: str) -> str:
    """A number from Ofcom's drama ranges (never allocated to anyone), or a short code."""
    tail = f"{rng.randrange(1000):03d}"
    if kind == "mobile":
        return rng.choice((f"07700 900{tail}", f"07700900{tail}"))
    if kind == "landline":
        return f"01632 960{tail}"
    if kind == "freephone":
        return f"08081570{tail}"
    if kind == "premium":
        return f"09098790{tail}"
    return str(rng.randrange(60000, 90000))  # short code


def _url(rng: random.Random) -> str:
    first = rng.choice(("claim", "secure", "parcel", "prize", "refund", "my-account", "win", "track", "verify"))
    second = rng.choice(("now", "online", "uk", "centre", "portal", "today", "help", "check"))
    return f"{rng.choice(('www.', '', 'http://'))}{first}-{second}.example"


def _fill(template: str, rng: random.Random) -> str:
    values = {key: rng.choice(options) for key, options in WORDS.items()}
    name, name2 = rng.sample(NAMES, 2)
    values.update(
        name=name,
        name2=name2,
        girl=rng.choice(GIRLS),
        mobile=_number(rng, "mobile"),
        landline=_number(rng, "landline"),
        freephone=_number(rng, "freephone"),
        premium=_number(rng, "premium"),
        short=_number(rng, "short"),
        url=_url(rng),
        code=f"{rng.choice('ABCDEFGHJKLMNPRSTWXZ')}{rng.choice('ABCDEFGHJKLMNPRSTWXZ')}{rng.randrange(100, 999)}",
        box=str(rng.randrange(100, 9999)),
        day_upper=rng.choice(WORDS["weekday"]).upper(),
    )
    return template.format(**values)


def _casual(text: str, rng: random.Random, *, strength: float) -> str:
    """Texting style: some abbreviations, maybe all lower case, dropped or extra punctuation, an ending."""
    for pattern, short in ABBREVIATIONS:
        if rng.random() < strength:
            text = re.sub(pattern, short, text, flags=re.IGNORECASE)
    if rng.random() < strength * 0.8:
        text = text.lower()
    if rng.random() < strength * 0.5:
        text = text.rstrip(".!?")
    elif rng.random() < 0.15:
        text = text.rstrip(".!?") + rng.choice(("!!", "??", "!!!", "?!"))
    return text + (rng.choice(ENDINGS) if rng.random() < strength else "")


def _shouty(text: str, rng: random.Random) -> str:
    """Spam style: some words upper case, sometimes the whole message."""
    if rng.random() < 0.15:
        return text.upper()
    words = text.split(" ")
    for i, word in enumerate(words):
        if word.isalpha() and len(word) > 3 and rng.random() < 0.12:
            words[i] = word.upper()
    return " ".join(words)


def _clean(text: str) -> str:
    """One line: no tabs or line breaks, single spaces, no leading quote (so csv/tsv readers agree)."""
    return " ".join(text.split()).lstrip("\"'")


def generate(total: int = TOTAL, spam: int = SPAM, seed: int = SEED) -> list[tuple[str, str]]:
    """``total`` distinct ``(label, text)`` pairs, ``spam`` of them spam, in a shuffled order."""
    rng = random.Random(seed)
    seen: set[str] = set()
    out: list[tuple[str, str]] = []
    for label, count in (("spam", spam), ("ham", total - spam)):
        made, tries = 0, 0
        while made < count:
            tries += 1
            if tries > count * 200:
                raise RuntimeError(f"could not make {count} distinct {label} messages; add templates or words")
            if label == "ham":
                text = _casual(_fill(rng.choice(HAM_TEMPLATES), rng), rng, strength=rng.choice((0.0, 0.3, 0.6, 0.9)))
            else:
                text = _fill(rng.choice(SPAM_TEMPLATES), rng)
                text = _casual(text, rng, strength=0.4) if rng.random() < 0.25 else _shouty(text, rng)
            text = _clean(text)
            key = " ".join(text.split()).lower()
            if text and key not in seen:
                seen.add(key)
                out.append((label, text))
                made += 1
    rng.shuffle(out)
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Write the invented SMS example file (label<TAB>text lines).")
    parser.add_argument(
        "out", type=Path, help="file to write, e.g. plugins/text_classification/pipelines/data/sms-example.tsv"
    )
    parser.add_argument("--total", type=int, default=TOTAL, help=f"messages to write (default {TOTAL})")
    parser.add_argument("--spam", type=int, default=SPAM, help=f"how many of them are spam (default {SPAM})")
    parser.add_argument("--seed", type=int, default=SEED, help=f"generator seed (default {SEED})")
    args = parser.parse_args(argv)
    messages = generate(args.total, args.spam, args.seed)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with args.out.open("w", encoding="utf-8", newline="\n") as fh:
        fh.writelines(f"{label}\t{text}\n" for label, text in messages)
    print(f"wrote {len(messages)} messages ({args.spam} spam) to {args.out}")


if __name__ == "__main__":
    main()
