"""Arabic text for the tests and the benchmarks: queries, passages of mixed lengths, and the model card's example."""

from __future__ import annotations

import numpy as np

# The example of ARA-Reranker-V1's model card: one query, four candidates from highly relevant to irrelevant.
MODEL_CARD_QUERY = "تطبيقات الذكاء الاصطناعي تُستخدم في مختلف المجالات لتحسين الكفاءة."
MODEL_CARD_CANDIDATES = [
    "الذكاء الاصطناعي يساهم في تحسين الإنتاجية في الصناعات المختلفة.",  # highly relevant
    "نماذج التعلم الآلي يمكنها التعرف على الأنماط في مجموعات البيانات الكبيرة.",  # moderately relevant
    "الذكاء الاصطناعي يساعد الأطباء في تحليل الصور الطبية بشكل أفضل.",  # somewhat relevant
    "تستخدم الحيوانات التمويه كوسيلة للهروب من الحيوانات المفترسة.",  # irrelevant
]

SENTENCES = [
    "الرياض هي عاصمة المملكة العربية السعودية وأكبر مدنها من حيث عدد السكان.",
    "تقع مدينة القاهرة على ضفاف نهر النيل وهي من أقدم المدن في العالم.",
    "يعتبر الذكاء الاصطناعي من أهم مجالات البحث العلمي في القرن الحادي والعشرين.",
    "تساعد نماذج إعادة الترتيب على تحسين نتائج البحث في أنظمة استرجاع المعلومات.",
    "يتناول هذا المقال تاريخ الخط العربي وتطوره عبر العصور الإسلامية المختلفة.",
    "الشاي الأخضر مشروب صحي غني بمضادات الأكسدة ويشربه كثير من الناس يومياً.",
    "فاز الفريق الوطني بالمباراة النهائية بعد أداء رائع في الشوط الثاني.",
    "تعتمد الزراعة في المناطق الصحراوية على تقنيات الري بالتنقيط لتوفير المياه.",
    "قامت الشركة بإطلاق تطبيق جديد يساعد الطلاب على تعلم البرمجة بسهولة.",
    "تشتهر مدينة جدة بشاطئها الجميل وأسواقها التاريخية في منطقة البلد.",
    "يحتفل المسلمون بعيد الفطر بعد انتهاء شهر رمضان المبارك.",
    "تعد اللغة العربية من أكثر اللغات انتشاراً في العالم ولها مكانة خاصة.",
]

QUERIES = [
    "ما هي عاصمة السعودية؟",
    "كيف تعمل نماذج إعادة الترتيب؟",
    "فوائد الشاي الأخضر",
    "تاريخ الخط العربي",
    "تعلم البرمجة للطلاب",
]


def passage(rng: np.random.Generator, sentences: int) -> str:
    """A passage of ``sentences`` sentences recombined from SENTENCES (deterministic given rng)."""
    return " ".join(SENTENCES[i] for i in rng.integers(0, len(SENTENCES), size=sentences))


def mixed_passages(rng: np.random.Generator, count: int, max_sentences: int = 12) -> list[str]:
    """Passages of mixed lengths, from one sentence to ``max_sentences`` (about 20 to 400 tokens)."""
    return [passage(rng, int(rng.integers(1, max_sentences + 1))) for _ in range(count)]


def long_passage(rng: np.random.Generator) -> str:
    """A passage of ~1,000 tokens: over 512 (cut by a gateway scoring at 512), within the model's 8,192."""
    return passage(rng, 60)


def very_long_passage(rng: np.random.Generator) -> str:
    """A passage of ~9,500 tokens: over the real model's whole 8,192-token context."""
    return passage(rng, 700)
