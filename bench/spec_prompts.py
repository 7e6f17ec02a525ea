"""Prompts for the speculative-decoding benchmark (`edgelm bench spec`), as data.

GROUNDED: tasks whose answer reuses the input (summarise, fix code, answer from a passage, rewrite, extract):
the case prompt lookup is for. OPEN: open-ended chat, where the answer owes little to the prompt: speculation
must not make these slower.
"""

PASSAGE = (
    "The Rhine rises in the Swiss Alps and flows north through Lake Constance, then west along the border between "
    "Switzerland and Germany to Basel. From Basel it turns north, forming part of the border between France and "
    "Germany, and passes Strasbourg, Mannheim and Mainz. Below Mainz it cuts through the Rhine Gorge, a UNESCO "
    "World Heritage Site known for its castles and vineyards, before reaching Koblenz, where the Moselle joins it. "
    "It then flows past Bonn, Cologne and Duesseldorf, enters the Netherlands near Emmerich, and splits into "
    "several branches, the largest of which, the Waal, carries most of its water to the North Sea near Rotterdam. "
    "The river is about 1,230 kilometres long and has been one of Europe's most important shipping routes since "
    "Roman times."
)

CODE = '''def average(values):
    total = 0
    for v in values:
        total += v
    return total / len(values)


def moving_average(values, window):
    out = []
    for i in range(len(values) - window):
        out.append(average(values[i:i + window]))
    return out


def normalise(values):
    low = min(values)
    high = max(values)
    return [(v - low) / (high - low) for v in values]
'''

EMAIL = (
    "Hi team, a quick update on the release. The build for version 2.4 passed all tests on Monday, but the "
    "installer for Windows still fails when the user name contains a space. Maria is fixing the installer and "
    "expects to be done by Wednesday. Tom will update the documentation for the new export options by Thursday. "
    "If both are done, we ship on Friday at noon; otherwise we move the release to next Tuesday. Please send me "
    "any other blockers by tomorrow evening. Thanks, Anna"
)

GROUNDED = [
    f"Summarise this paragraph in three sentences:\n\n{PASSAGE}",
    f"Using only the passage below, list every city the Rhine passes, in order.\n\n{PASSAGE}",
    f"Answer from the passage: where does the Moselle join the Rhine, and what is the Rhine Gorge known for?\n\n"
    f"{PASSAGE}",
    f"Rewrite this paragraph for a ten-year-old, keeping every fact:\n\n{PASSAGE}",
    f"Fix the bug in moving_average (it drops the last window) and return the whole corrected file:\n\n{CODE}",
    f"Add type hints and a docstring to every function in this code, and return the whole file:\n\n{CODE}",
    f"normalise divides by zero when all values are equal. Return the file with that fixed:\n\n{CODE}",
    f"Extract every task, its owner and its deadline from this email as a list:\n\n{EMAIL}",
    f"Rewrite this email in a more formal tone, keeping all the details:\n\n{EMAIL}",
    f"Repeat the following text exactly, then add one sentence saying what it is about:\n\n{PASSAGE}",
]

OPEN = [
    "Write a short poem about the sea at night.",
    "What are three good habits for learning a new language?",
    "Tell me a short story about a robot who learns to paint.",
    "Give me some ideas for a weekend trip in the mountains.",
    "Why is the sky blue? Explain simply.",
    "What should I consider when adopting a dog?",
    "Describe your ideal breakfast.",
    "How do I start running if I have never run before?",
]

PROMPT_SETS = {"grounded": GROUNDED, "open": OPEN}
