"""The benchmark's workload: Arabic queries, each with N documents of realistic, mixed lengths.

Everything is made from a fixed seed out of text written for this project (sentences recombined), so
every system sees the same requests in the same order and nothing is downloaded. Document lengths,
in tokens of the model's own tokenizer, follow a log-normal law (many short passages, a long tail)
clipped to [min_tokens, max_tokens], as retrieval candidates do.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

__all__ = ["Request", "Workload", "make_workload", "SHAPES"]

# Named workloads (``make_workload(tokenizer, **SHAPES[name])``): the default mix of retrieval candidates,
# uniform passages as a text splitter cuts them (~128 and ~512 tokens), and long documents (whole pages).
SHAPES: dict[str, dict] = {
    "mixed": {},
    "uniform-128": {"median_tokens": 128, "spread": 0.0, "min_tokens": 112, "max_tokens": 136, "docs_per_request": 32},
    "uniform-512": {"median_tokens": 512, "spread": 0.0, "min_tokens": 496, "max_tokens": 520, "docs_per_request": 16},
    "long": {"median_tokens": 2500, "spread": 0.3, "min_tokens": 1500, "max_tokens": 4000, "docs_per_request": 4},
}

QUERIES = [
    "ما هي عاصمة المملكة العربية السعودية؟",
    "كيف تعمل نماذج إعادة الترتيب في محركات البحث؟",
    "ما فوائد الشاي الأخضر للصحة؟",
    "تاريخ الخط العربي وأنواعه",
    "أفضل طرق تعلم البرمجة للمبتدئين",
    "كيف يتم ري المزروعات في المناطق الصحراوية؟",
    "ما هي أسباب تغير المناخ وآثاره على المنطقة العربية؟",
    "متى يحتفل المسلمون بعيد الفطر؟",
    "ما هي أهم المعالم السياحية في مدينة جدة؟",
    "كيف يساعد الذكاء الاصطناعي الأطباء في التشخيص؟",
    "ما هي شروط الحصول على تأشيرة العمل؟",
    "كيف أحمي حسابي المصرفي من الاحتيال الإلكتروني؟",
    "ما الفرق بين الطاقة الشمسية وطاقة الرياح؟",
    "نصائح لتحسين جودة النوم",
    "كيف نشأت الحضارة في وادي النيل؟",
    "ما هي أعراض نقص فيتامين د؟",
]

# Written for the project: plain statements on the topics above and others, so that candidate lists
# mix relevant and irrelevant passages.
SENTENCES = [
    "الرياض هي عاصمة المملكة العربية السعودية وأكبر مدنها من حيث عدد السكان.",
    "تقع مدينة القاهرة على ضفاف نهر النيل وهي من أقدم المدن المأهولة في العالم.",
    "يعتبر الذكاء الاصطناعي من أهم مجالات البحث العلمي في القرن الحادي والعشرين.",
    "تساعد نماذج إعادة الترتيب على تحسين نتائج البحث في أنظمة استرجاع المعلومات.",
    "يقرأ النموذج السؤال والمقطع معاً ثم يعطي درجة تعبر عن مدى صلة المقطع بالسؤال.",
    "يتناول هذا المقال تاريخ الخط العربي وتطوره عبر العصور الإسلامية المختلفة.",
    "من أشهر أنواع الخط العربي النسخ والثلث والديواني والرقعة والكوفي.",
    "الشاي الأخضر مشروب غني بمضادات الأكسدة ويشربه كثير من الناس يومياً.",
    "تشير بعض الدراسات إلى أن الشاي الأخضر قد يساعد على تحسين التركيز.",
    "فاز الفريق الوطني بالمباراة النهائية بعد أداء رائع في الشوط الثاني.",
    "تعتمد الزراعة في المناطق الصحراوية على تقنيات الري بالتنقيط لتوفير المياه.",
    "يستخدم المزارعون أجهزة استشعار لقياس رطوبة التربة وتحديد مواعيد الري.",
    "أطلقت الشركة تطبيقاً جديداً يساعد الطلاب على تعلم البرمجة بخطوات بسيطة.",
    "ينصح الخبراء المبتدئين بالبدء بلغة بايثون لسهولة قواعدها ووضوحها.",
    "تشتهر مدينة جدة بكورنيشها الجميل وأسواقها التاريخية في منطقة البلد.",
    "يحتفل المسلمون بعيد الفطر في اليوم الأول من شهر شوال بعد انتهاء رمضان.",
    "تعد اللغة العربية من أكثر اللغات انتشاراً في العالم ولها مكانة خاصة.",
    "يؤدي ارتفاع درجات الحرارة إلى زيادة موجات الجفاف وتراجع الموارد المائية.",
    "تستثمر دول الخليج في مشاريع الطاقة الشمسية لتنويع مصادر الطاقة.",
    "تعمل توربينات الرياح على تحويل حركة الهواء إلى طاقة كهربائية نظيفة.",
    "يحتاج طلب تأشيرة العمل إلى عقد عمل موثق وشهادة طبية وصورة من جواز السفر.",
    "لا تشارك رمز التحقق المرسل إلى هاتفك مع أي شخص يدعي أنه موظف في البنك.",
    "يساعد الذكاء الاصطناعي الأطباء في تحليل صور الأشعة واكتشاف الأمراض مبكراً.",
    "النوم الكافي لمدة سبع ساعات على الأقل يحسن المزاج والذاكرة.",
    "يُنصح بإطفاء الشاشات قبل النوم بساعة لأن ضوءها يؤخر الشعور بالنعاس.",
    "نشأت الحضارة المصرية القديمة على ضفاف النيل بفضل خصوبة الأرض وفيضان النهر.",
    "بنى المصريون القدماء الأهرامات في الجيزة قبل أكثر من أربعة آلاف عام.",
    "من أعراض نقص فيتامين د التعب وآلام العظام وضعف العضلات.",
    "يمكن الحصول على فيتامين د من التعرض لأشعة الشمس ومن بعض الأطعمة كالأسماك.",
    "تستخدم الحيوانات التمويه وسيلةً للهروب من الحيوانات المفترسة.",
    "افتتحت المكتبة العامة قاعة جديدة للأطفال تضم آلاف الكتب المصورة.",
    "ارتفعت أسعار الذهب في الأسواق العالمية بسبب زيادة الطلب عليه.",
    "يعد التمر من أهم المحاصيل الزراعية في شبه الجزيرة العربية منذ القدم.",
    "تربط شبكة القطارات الجديدة بين المدن الكبرى وتختصر زمن السفر.",
    "يمارس كثير من الشباب رياضة المشي في الحدائق العامة مساءً.",
    "تعلن الأرصاد الجوية عن أمطار غزيرة متوقعة على المناطق الجنوبية.",
]


@dataclass(frozen=True)
class Request:
    """One rerank call: a query and its candidate documents."""

    query: str
    documents: list[str]


@dataclass(frozen=True)
class Workload:
    """The requests, in the order clients send them, and how they were made."""

    requests: list[Request]
    seed: int
    docs_per_request: int
    min_tokens: int
    max_tokens: int
    document_tokens: list[int]  # tokens of each document alone, in request order, for the report

    @property
    def pairs(self) -> int:
        return sum(len(r.documents) for r in self.requests)

    def summary(self) -> dict:
        """Sizes for the report: how long the documents really are."""
        tokens = np.array(self.document_tokens)
        return {
            "seed": self.seed, "requests": len(self.requests), "docs_per_request": self.docs_per_request,
            "document_tokens": {
                "min": int(tokens.min()), "p50": float(np.median(tokens)), "mean": round(float(tokens.mean()), 1),
                "p90": float(np.percentile(tokens, 90)), "max": int(tokens.max()),
            },
        }

    def save(self, path: Path) -> None:
        payload = asdict(self)
        path.write_text(json.dumps(payload, ensure_ascii=False))

    @classmethod
    def load(cls, path: Path) -> "Workload":
        payload = json.loads(path.read_text())
        payload["requests"] = [Request(**r) for r in payload["requests"]]
        return cls(**payload)


def make_workload(tokenizer, *, seed: int = 20240501, requests: int = 96, docs_per_request: int = 10,
                  min_tokens: int = 20, max_tokens: int = 400, median_tokens: float = 110.0, spread: float = 0.75) -> Workload:
    """``requests`` queries with ``docs_per_request`` documents each, deterministic given ``seed``; document
    lengths log-normal around ``median_tokens`` (sigma ``spread``; 0: all near the median), clipped.

    ``tokenizer``: the served model's tokenizer (a Hugging Face fast tokenizer), used to size documents
    in real tokens."""
    rng = np.random.default_rng(seed)
    sentence_tokens = [len(ids) for ids in tokenizer(SENTENCES, add_special_tokens=False)["input_ids"]]
    built: list[Request] = []
    for i in range(requests):
        query = QUERIES[i % len(QUERIES)] if i < len(QUERIES) else QUERIES[int(rng.integers(len(QUERIES)))]
        targets = np.clip(rng.lognormal(np.log(median_tokens), spread, size=docs_per_request), min_tokens, max_tokens)
        built.append(Request(query, [_document(rng, int(t), sentence_tokens, max_tokens) for t in targets]))
    documents = [d for r in built for d in r.documents]
    lengths = [len(ids) for ids in tokenizer(documents, add_special_tokens=False)["input_ids"]]
    return Workload(built, seed, docs_per_request, min_tokens, max_tokens, lengths)


def _document(rng: np.random.Generator, target: int, sentence_tokens: list[int], max_tokens: int) -> str:
    """Random sentences until ``target`` tokens are reached, never past ``max_tokens``."""
    parts: list[str] = []
    total = 0
    while total < target:
        k = int(rng.integers(len(SENTENCES)))
        if parts and total + sentence_tokens[k] > max_tokens:
            break
        parts.append(SENTENCES[k])
        total += sentence_tokens[k]
    return " ".join(parts)
