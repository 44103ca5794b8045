"""Routing cost against rules files of 10 to 10,000 keyword rules; prints figures, asserts nothing.

    python bench/routing.py

Targets (issue "Rule handlers"): one text message routes in <= 30 us median, roughly flat from
10 to 10,000 rules; a file of 10,000 rules loads (parse, validate, index) in under 1 s.
"""

from __future__ import annotations

import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from handlers import build_router  # noqa: E402
from webhook.testing.factories import make_text  # noqa: E402

SIZES = (10, 100, 1_000, 10_000)
CHARS = "的一是在不了有和人这中大为上个国我以要他时来用们生到作地于出就分对成会可主发年动同工也能下过子说产种面而方后多定行学法所民得经十三之进着等部度家电力里如水化高自二理起小物现实加量都两体制机当使点从业本去把性好应开它合还因由其些然前外天政四日那社义事平形相全表间样与关各重新线内数正心反你明看原又么利比或但质气第向道命此变条只没结解问意建月公无系军很情者最立代想已通并提直题党程展五果料象员革位入常文总次品式活设及管特件长求老头基资边流路级少图山统接知较将组见计别她手角期根论运农指几九区强放决西被干做必战先回则任取据处理"


def rules_file(count: int, rng: random.Random, regexes: int = 0) -> tuple[str, list[str]]:
    words: set[str] = set()
    while len(words) < count * 2:
        words.add("".join(rng.choice(CHARS) for _ in range(rng.randint(2, 4))))
    ordered = sorted(words)
    rng.shuffle(ordered)
    lines = []
    for number in range(count):
        pair = ordered[2 * number: 2 * number + 2]
        lines.append(f'[[rule]]\nname = "r{number}"\nkeywords = ["{pair[0]}", "{pair[1]}"]\n'
                     f'reply.text = "answer {number}"\n')
    for number in range(regexes):  # spread through the file: each is asked in its turn
        lines.insert(number * count // regexes, f'[[rule]]\nname = "re{number}"\n'
                     f"regex = '^订单{number}\\s*(?P<n>\\d{{6,}})$'\nreply.text = \"{{n}}\"\n")
    return "\n".join(lines), ordered


def median_us(router, texts: list[str], rounds: int = 5) -> float:
    messages = [make_text(text) for text in texts]
    samples = []
    for _ in range(rounds):
        for message in messages:
            started = time.perf_counter()
            router.route(message, appid="wx1")
            samples.append(time.perf_counter() - started)
    return statistics.median(samples) * 1e6


def main() -> None:
    rng = random.Random(7)
    print("load s: median of 3 (parse + validate + index); us: median route() of one message")
    print("last row: 20 regex rules spread through the file (not indexed: asked in order)")
    print(f"{'rules':>10} {'load s':>8} {'hit us':>8} {'miss us':>8} {'rules matched (sample)':>24}")
    baseline = None
    with tempfile.TemporaryDirectory() as folder:
        for count, regexes in [(size, 0) for size in SIZES] + [(10_000, 20)]:
            text, words = rules_file(count, rng, regexes)
            path = Path(folder) / f"rules{count}.toml"
            path.write_text(text, encoding="utf-8")
            loads = []
            for _ in range(3):
                started = time.perf_counter()
                router = build_router(str(path))
                router.compile()
                loads.append(time.perf_counter() - started)
            load = statistics.median(loads)
            # ~16-character messages; "hit" ones carry a keyword of a rule in the middle
            hits = [f"你好请问{rng.choice(words[count // 2: count + count // 2 + 1])}怎么办呢谢谢"
                    for _ in range(200)]
            misses = ["你好请问这个东西怎么用呢谢谢", "Hello, when do you open today?"] * 100
            hit, miss = median_us(router, hits), median_us(router, misses)
            sample = router.route(make_text(hits[0]), appid="wx1").names
            baseline = baseline or hit
            label = f"{count}+{regexes}re" if regexes else str(count)
            print(f"{label:>10} {load:>8.3f} {hit:>8.1f} {miss:>8.1f} {','.join(sample):>24}"
                  f"   (hit x{hit / baseline:.2f} of 10 rules)")


if __name__ == "__main__":
    main()
