"""Text sources, tokenizers, the token cache and batch sampling."""

from reasonlab.data.corpus import Corpus, prepare_corpus
from reasonlab.data.sampler import BatchSampler, eval_batches
from reasonlab.data.tokenizer import Tokenizer

__all__ = ["BatchSampler", "Corpus", "Tokenizer", "eval_batches", "prepare_corpus"]
