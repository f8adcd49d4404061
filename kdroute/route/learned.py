"""Learned scorers: features of the flattened conversation + a linear head (or neighbours).

- `embedding`: all-MiniLM-L6-v2 sentence embedding -> logistic regression (the issue's default).
- `tfidf`: character 1-3-gram TF-IDF (feature hashing, so no vocabulary is stored) -> logistic
  regression; optionally plus the lexical features (`lexical_weight`, off by default: they lowered
  APGR on the RouteLLM data). About a millisecond per prompt: the fast learned scorer.
- `tfidf_words`: the same over word 1-2-grams (topic words rather than digits and symbols).
- `tfidf_length`: `tfidf` where every n-gram also has a slope on the prompt's (log) length, so
  "longer is harder" can hold for one kind of prompt and not for another (the demo suite: long
  words are hard to reverse, while counting their letters stays easy).
- `embedding_within`: the embedding -> ridge regression on each label minus its group's mean: what
  makes a prompt harder than others of its task, not which task it is (generalises to new tasks).
- `knn`: similarity-weighted label rate of the k nearest training prompts in embedding space.
- `task_prior`: infers the task/subject a prompt belongs to from its text (a classifier over the
  embedding) and returns that task's smoothed label rate; needs `groups` when fitted.
- `ensemble` (in `ensemble.py`): a stacked combination of the above.

sklearn fits the heads; scoring is plain numpy on the stored arrays, so an artifact loads without
pickle and without importing sklearn.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from kdroute.errors import InputError
from kdroute.route.base import Scorer, sigmoid
from kdroute.route.data import positive
from kdroute.route.embed import DIM
from kdroute.route.features import LEXICAL_NAMES, lexical_matrix


def check_labels(labels: np.ndarray, n: int) -> np.ndarray:
    """(N,) float targets in [0, 1]: 0/1 labels, or soft ones (the `expected_gain` rule)."""
    y = np.asarray(labels, dtype=np.float64)
    if y.shape != (n,) or n == 0:
        raise InputError("no training data: need one label per prompt and at least one prompt")
    if not np.all((y >= 0) & (y <= 1)):
        raise InputError("labels must lie in [0, 1]")
    if not np.any(positive(y)):
        raise InputError("no positive labels: the student never needs the teacher on this data "
                         "(try another label rule)")
    if y.min() == y.max():
        raise InputError("no negative labels: every prompt needs the teacher on this data")
    return y


def fit_logistic(x, y: np.ndarray, c: float, weights: np.ndarray | None = None
                 ) -> tuple[np.ndarray, float]:
    """(F,) weights and bias of an L2 logistic regression (sklearn lbfgs) on targets in [0, 1].

    A soft target y counts as a positive example with weight y plus a negative one with weight
    1 - y (cross-entropy against y); 0/1 targets give the ordinary fit on the same rows.
    `weights` (N,) scale each row's two parts (e.g. inverse inclusion probabilities).
    """
    from scipy.sparse import issparse, vstack
    from sklearn.linear_model import LogisticRegression

    pos, neg = np.flatnonzero(y > 0), np.flatnonzero(y < 1)
    rows = vstack([x[pos], x[neg]]).tocsr() if issparse(x) else np.vstack([x[pos], x[neg]])
    target = np.r_[np.ones(len(pos)), np.zeros(len(neg))]
    w = np.ones(len(y)) if weights is None else np.asarray(weights, dtype=np.float64)
    weight = np.r_[y[pos] * w[pos], (1.0 - y[neg]) * w[neg]]
    model = LogisticRegression(C=c, max_iter=3000)
    model.fit(rows, target, sample_weight=weight)
    return model.coef_[0].astype(np.float64), float(model.intercept_[0])


def embed(texts: Sequence[str], max_length: int) -> np.ndarray:
    """(N, 384) float64 MiniLM embeddings from the process-wide encoder (memoised per text)."""
    from kdroute.route.embed import get_encoder

    return get_encoder(max_length).encode(list(texts)).astype(np.float64)


def _log_chars(texts: Sequence[str]) -> np.ndarray:
    """(N,) log1p of each text's length in characters."""
    return np.log1p(np.array([len(t) for t in texts], dtype=np.float64))


class _Standardizer:
    """Mean/std scaling of dense features, stored as two arrays."""

    def __init__(self, mean: np.ndarray | None = None, std: np.ndarray | None = None):
        self.mean, self.std = mean, std

    def fit(self, x: np.ndarray) -> _Standardizer:
        self.mean = x.mean(0)
        self.std = np.where(x.std(0) > 1e-9, x.std(0), 1.0)
        return self

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return (x - self.mean) / self.std


class EmbeddingScorer(Scorer):
    """MiniLM sentence embedding -> logistic regression."""

    name = "embedding"
    needs_training = True

    def __init__(self, c: float = 0.1, max_length: int = 256):
        self.c, self.max_length = float(c), int(max_length)
        self.w: np.ndarray | None = None
        self.b = 0.0

    def fit(self, texts, labels, groups=None, weights=None) -> EmbeddingScorer:
        y = check_labels(labels, len(texts))
        self.w, self.b = fit_logistic(embed(texts, self.max_length), y, self.c, weights)
        return self

    def score_texts(self, texts: Sequence[str]) -> np.ndarray:
        return sigmoid(embed(texts, self.max_length) @ self.w + self.b)

    def state(self):
        return {"c": self.c, "max_length": self.max_length, "b": self.b}, {"w": self.w}

    @classmethod
    def from_state(cls, params, arrays):
        obj = cls(params["c"], params["max_length"])
        obj.w, obj.b = arrays["w"], float(params["b"])
        return obj


class EmbeddingWithinScorer(Scorer):
    """MiniLM embedding -> ridge regression on within-group labels (each label minus the weighted
    mean label of its group, e.g. its MMLU subject or bench task).

    Why: a head fitted to the raw labels mostly learns each task's label rate (on MMLU a subject's
    rate alone reaches the within-subject APGR of the embedding head), which is noise on a task it
    never saw. Centring the labels per group leaves only the directions that separate harder from
    easier prompts inside a task, which carry over (MMLU -> GSM8K, route_generalise.json). The
    score is a monotone squash of the predicted within-group gain: only its rank means anything,
    and a new task's base rate is unknown by construction. With fewer than two groups there is
    nothing to tell difficulty from topic (the fit would be the plain topic head), so it learns
    nothing and scores every prompt 0.5: in an ensemble it then ranks nothing.
    """

    name = "embedding_within"
    needs_training = True

    def __init__(self, alpha: float = 10.0, max_length: int = 256):
        self.alpha, self.max_length = float(alpha), int(max_length)
        self.w: np.ndarray | None = None

    def fit(self, texts, labels, groups=None, weights=None) -> EmbeddingWithinScorer:
        from sklearn.linear_model import Ridge

        y = check_labels(labels, len(texts))
        wt = np.ones(len(y)) if weights is None else np.asarray(weights, dtype=np.float64)
        _, g = np.unique(np.asarray(groups if groups is not None else [""] * len(y), dtype=str),
                         return_inverse=True)
        if g.max(initial=0) == 0:  # one group: no within-group direction to learn
            self.w = np.zeros(DIM)
            return self
        group_mean = np.bincount(g, y * wt) / np.bincount(g, wt)  # (G,)
        model = Ridge(alpha=self.alpha).fit(embed(texts, self.max_length), y - group_mean[g],
                                            sample_weight=wt)
        self.w = model.coef_.astype(np.float64)  # the intercept is ~0 and ranks nothing
        return self

    def score_texts(self, texts: Sequence[str]) -> np.ndarray:
        if not self.w.any():  # fitted on one group: nothing learned, nothing to encode
            return np.full(len(texts), 0.5)
        return sigmoid(4.0 * (embed(texts, self.max_length) @ self.w))

    def state(self):
        return {"alpha": self.alpha, "max_length": self.max_length}, {"w": self.w}

    @classmethod
    def from_state(cls, params, arrays):
        obj = cls(params["alpha"], params["max_length"])
        obj.w = arrays["w"]
        return obj


class TfidfScorer(Scorer):
    """Hashed character n-gram TF-IDF (+ optional lexical features) -> logistic regression."""

    name = "tfidf"
    needs_training = True

    analyzer = "char_wb"

    def __init__(self, c: float = 0.3, n_features: int = 2**18, ngram_min: int = 1,
                 ngram_max: int = 3, lexical_weight: float = 0.0, min_df: int = 3,
                 length_slopes: bool = False):
        self.c, self.n_features = float(c), int(n_features)
        self.ngram = (int(ngram_min), int(ngram_max))
        self.lexical_weight = float(lexical_weight)
        self.min_df = int(min_df)
        self.length_slopes = bool(length_slopes)
        self.idf: np.ndarray | None = None
        self.scaler = _Standardizer()
        self.length = np.array([0.0, 1.0])  # mean, std of log1p(chars) on the training prompts
        self.w: np.ndarray | None = None
        self.b = 0.0

    def _counts(self, texts: Sequence[str]):
        vec = self.__dict__.get("_vectorizer")
        if vec is None:  # built once: the gateway scores one prompt at a time
            from sklearn.feature_extraction.text import HashingVectorizer

            vec = self._vectorizer = HashingVectorizer(
                analyzer=self.analyzer, ngram_range=self.ngram, n_features=self.n_features,
                alternate_sign=False, norm=None)
        return vec.transform(texts)  # (N, n_features) sparse term counts

    def features(self, texts: Sequence[str]):
        from scipy.sparse import csr_matrix, diags, hstack
        from sklearn.preprocessing import normalize

        counts = self._counts(texts).tocsr()
        counts.data = 1.0 + np.log(counts.data)  # sublinear tf
        tfidf = normalize(counts.multiply(self.idf).tocsr())
        lex = self.scaler(lexical_matrix(texts)) * self.lexical_weight
        blocks = [tfidf]
        if self.length_slopes:  # each row again, times its standardised log length
            blocks.append(diags(self._length_z(texts)) @ tfidf)
        # (N, n_features [x 2 with length slopes] + len(LEXICAL_NAMES))
        return hstack([*blocks, csr_matrix(lex)]).tocsr()

    def _length_z(self, texts: Sequence[str]) -> np.ndarray:
        """(N,) standardised log1p(characters) of each text."""
        return (_log_chars(texts) - self.length[0]) / self.length[1]

    def fit(self, texts, labels, groups=None, weights=None) -> TfidfScorer:
        y = check_labels(labels, len(texts))
        df = np.bincount(self._counts(texts).tocsr().indices, minlength=self.n_features)  # (F,)
        n = len(texts)
        # sklearn's smooth idf; n-grams seen in fewer than min_df prompts are dropped (idf 0)
        self.idf = np.where(df >= self.min_df, np.log((1 + n) / (1 + df)) + 1.0, 0.0)
        self.scaler.fit(lexical_matrix(texts))
        chars = _log_chars(texts)
        self.length = np.array([chars.mean(), chars.std() if chars.std() > 1e-9 else 1.0])
        self.w, self.b = fit_logistic(self.features(texts), y, self.c, weights)
        return self

    def score_texts(self, texts: Sequence[str]) -> np.ndarray:
        if self.lexical_weight == 0.0:
            return self._score_tfidf(texts)
        return sigmoid(self.features(texts) @ self.w + self.b)

    def _score_tfidf(self, texts: Sequence[str]) -> np.ndarray:
        """The same score as `features(texts) @ w + b` when the lexical block weighs 0, on each
        row's hashed non-zeros with numpy: no lexical regexes (their columns would be zeros) and
        no sparse-matrix stacking. ~4x faster per uncached prompt (issue 14)."""
        counts = self._counts(texts).tocsr()
        f = self.n_features
        w = self.w[:f]
        slopes = self.w[f: 2 * f] if self.length_slopes else None
        z = self._length_z(texts) if self.length_slopes else None
        logits = np.zeros(len(texts))
        for i in range(len(texts)):
            lo, hi = counts.indptr[i], counts.indptr[i + 1]
            idx = counts.indices[lo:hi]
            v = (1.0 + np.log(counts.data[lo:hi])) * self.idf[idx]  # sublinear tf x idf
            norm = np.sqrt(v @ v)
            if norm > 0:
                row_w = w[idx] if slopes is None else w[idx] + z[i] * slopes[idx]
                logits[i] = (v @ row_w) / norm  # the l2-normalised row times the weights
        return sigmoid(logits + self.b)

    def state(self):
        params = {"c": self.c, "n_features": self.n_features, "ngram_min": self.ngram[0],
                  "ngram_max": self.ngram[1], "lexical_weight": self.lexical_weight,
                  "min_df": self.min_df, "length_slopes": self.length_slopes, "b": self.b}
        return params, {"idf": self.idf.astype(np.float32), "w": self.w.astype(np.float32),
                        "mean": self.scaler.mean, "std": self.scaler.std, "length": self.length}

    @classmethod
    def from_state(cls, params, arrays):
        params = dict(params)
        b = float(params.pop("b"))
        obj = cls(**params)
        obj.idf, obj.w, obj.b = arrays["idf"].astype(np.float64), arrays["w"].astype(np.float64), b
        obj.scaler = _Standardizer(arrays["mean"], arrays["std"])
        if "length" in arrays:  # saved before length slopes existed: none to undo
            obj.length = np.asarray(arrays["length"], dtype=np.float64)
        width = obj.n_features * (2 if obj.length_slopes else 1) + len(LEXICAL_NAMES)
        if len(obj.scaler.mean) != len(LEXICAL_NAMES) or len(obj.w) != width:
            raise InputError("the tfidf router was saved by another kdroute version; retrain it")
        return obj


class TfidfWordsScorer(TfidfScorer):
    """Word 1-2-gram TF-IDF (hashed) -> logistic regression: topic and subject words."""

    name = "tfidf_words"
    analyzer = "word"

    def __init__(self, c: float = 0.3, n_features: int = 2**18, ngram_min: int = 1,
                 ngram_max: int = 2, lexical_weight: float = 0.0, min_df: int = 2,
                 length_slopes: bool = False):
        super().__init__(c, n_features, ngram_min, ngram_max, lexical_weight, min_df,
                         length_slopes)


class TfidfLengthScorer(TfidfScorer):
    """Character n-gram TF-IDF where every n-gram has a weight and a slope on the prompt's
    standardised log length -> logistic regression.

    Why: difficulty often grows with length inside one kind of prompt (longer words to reverse,
    longer numbers to add) while another kind stays easy at any length, so one global length
    weight cannot rank both, and plain n-grams give each kind a single rate. The slopes let the
    head say "longer is harder" for the prompts that share a template's n-grams only.
    """

    name = "tfidf_length"

    def __init__(self, *, length_slopes: bool = True, **params):
        super().__init__(**params, length_slopes=length_slopes)


class KnnScorer(Scorer):
    """Similarity-weighted label rate of the k nearest training prompts (cosine, embeddings)."""

    name = "knn"
    needs_training = True

    def __init__(self, k: int = 100, max_length: int = 256):
        self.k, self.max_length = int(k), int(max_length)
        self.keys: np.ndarray | None = None  # (M, 384) float16 unit vectors
        self.values: np.ndarray | None = None  # (M,)
        self.weights: np.ndarray | None = None  # (M,) or None: every neighbour counts 1

    def fit(self, texts, labels, groups=None, weights=None) -> KnnScorer:
        y = check_labels(labels, len(texts))
        self.keys = embed(texts, self.max_length).astype(np.float16)
        self.values = y.astype(np.float32)
        self.weights = None if weights is None else np.asarray(weights, np.float32)
        return self

    def score_texts(self, texts: Sequence[str]) -> np.ndarray:
        q = embed(texts, self.max_length).astype(np.float32)  # (N, 384)
        sims = q @ self.keys.astype(np.float32).T  # (N, M)
        k = min(self.k, sims.shape[1])
        top = np.argpartition(-sims, k - 1, axis=1)[:, :k]  # (N, k)
        w = np.maximum(np.take_along_axis(sims, top, 1), 1e-3)
        if self.weights is not None:  # each neighbour counts its weight
            w = w * self.weights[top]
        return (w * self.values[top]).sum(1) / w.sum(1)

    def state(self):
        arrays = {"keys": self.keys, "values": self.values}
        if self.weights is not None:
            arrays["weights"] = self.weights
        return {"k": self.k, "max_length": self.max_length}, arrays

    @classmethod
    def from_state(cls, params, arrays):
        obj = cls(**params)
        obj.keys, obj.values = arrays["keys"], arrays["values"]
        obj.weights = arrays.get("weights")
        return obj


class TaskPriorScorer(Scorer):
    """Which task/subject is this prompt from (inferred from its text), and how often does that
    task need the teacher? Score = sum over tasks of P(task | text) * smoothed label rate."""

    name = "task_prior"
    needs_training = True

    def __init__(self, c: float = 1.0, smoothing: float = 5.0, max_length: int = 256):
        self.c, self.smoothing, self.max_length = float(c), float(smoothing), int(max_length)
        self.w: np.ndarray | None = None  # (384, G)
        self.b: np.ndarray | None = None  # (G,)
        self.prior: np.ndarray | None = None  # (G,)

    def fit(self, texts, labels, groups=None, weights=None) -> TaskPriorScorer:
        from sklearn.linear_model import LogisticRegression

        y = check_labels(labels, len(texts))
        wt = np.ones(len(y)) if weights is None else np.asarray(weights, np.float64)
        names, g = np.unique(np.asarray(groups if groups is not None else [""] * len(y)),
                             return_inverse=True)
        rate = y.mean()
        counts = np.bincount(g, weights=wt, minlength=len(names))
        self.prior = (np.bincount(g, weights=y * wt, minlength=len(names))
                      + self.smoothing * rate) / (counts + self.smoothing)
        if len(names) == 1:  # one task: the prior is a constant
            self.w, self.b = np.zeros((0, 1)), np.zeros(1)
            return self
        model = LogisticRegression(C=self.c, max_iter=3000).fit(embed(texts, self.max_length), g,
                                                                sample_weight=wt)
        coef, icpt = model.coef_, model.intercept_
        if len(names) == 2:  # sklearn's binary form: one row for class 1
            coef, icpt = np.vstack([-coef / 2, coef / 2]), np.array([-icpt[0] / 2, icpt[0] / 2])
        self.w, self.b = coef.T.astype(np.float64), icpt.astype(np.float64)
        return self

    def score_texts(self, texts: Sequence[str]) -> np.ndarray:
        if self.w.shape[0] == 0:
            return np.full(len(texts), float(self.prior[0]))
        logits = embed(texts, self.max_length) @ self.w + self.b  # (N, G)
        p = np.exp(logits - logits.max(1, keepdims=True))
        return (p / p.sum(1, keepdims=True)) @ self.prior

    def state(self):
        return ({"c": self.c, "smoothing": self.smoothing, "max_length": self.max_length},
                {"w": self.w, "b": self.b, "prior": self.prior})

    @classmethod
    def from_state(cls, params, arrays):
        obj = cls(**params)
        obj.w, obj.b, obj.prior = arrays["w"], arrays["b"], arrays["prior"]
        return obj


class DifficultyScorer(Scorer):
    """Features of difficulty, not of topic: the lexical features (length, numbers, operators,
    reasoning words, answer choices ...) standardised -> logistic regression. Generalises to
    subjects it never saw, where n-gram and embedding heads only know each subject's label rate."""

    name = "difficulty"
    needs_training = True

    def __init__(self, c: float = 0.1):
        self.c = float(c)
        self.scaler = _Standardizer()
        self.w: np.ndarray | None = None
        self.b = 0.0

    def fit(self, texts, labels, groups=None, weights=None) -> DifficultyScorer:
        y = check_labels(labels, len(texts))
        x = lexical_matrix(texts)
        self.w, self.b = fit_logistic(self.scaler.fit(x)(x), y, self.c, weights)
        return self

    def score_texts(self, texts: Sequence[str]) -> np.ndarray:
        return sigmoid(self.scaler(lexical_matrix(texts)) @ self.w + self.b)

    def state(self):
        return {"c": self.c, "b": self.b}, {"w": self.w, "mean": self.scaler.mean,
                                            "std": self.scaler.std}

    @classmethod
    def from_state(cls, params, arrays):
        obj = cls(params["c"])
        obj.w, obj.b = arrays["w"], float(params["b"])
        obj.scaler = _Standardizer(arrays["mean"], arrays["std"])
        return obj
