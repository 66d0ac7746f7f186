import numpy as np
import pytest
import torch
from helpers import Scale, marked_chunks, openai_llm
from llama_index.core import VectorStoreIndex
from llama_index.core.schema import TextNode

from adapterkit import (
    AdapterEmbeddingModel,
    EmbeddingAdapterFinetuneEngine,
    EmbeddingQAFinetuneDataset,
    LinearLayer,
    TwoLayerNN,
    embed_texts,
    evaluate,
)
from adapterkit.training.sampling import no_duplicate_batches

UBER = (
    "Uber Technologies operates a platform that connects riders with drivers in many cities. "
    "Gross bookings grew substantially in 2021 as mobility trips recovered from the pandemic. "
    "Delivery revenue increased because of higher demand for food delivery from restaurants."
)


def test_no_duplicate_batches():
    positives = [0, 0, 1, 1, 2, 2, 3]
    batches = no_duplicate_batches(positives, 3, range(7))
    assert sorted(i for b in batches for i in b) == list(range(7))
    for b in batches:
        assert len({positives[i] for i in b}) == len(b) <= 3


def test_finetune_trains_saves_checkpoints_and_reloads(tmp_path, train_small, val_small, bge):
    engine = EmbeddingAdapterFinetuneEngine(
        train_small,
        bge,
        epochs=4,
        batch_size=8,
        optimizer_params={"lr": 1e-3},
        val_fraction=0.0,
        guard=False,
        refit=False,
        model_output_path=tmp_path / "out",
        model_checkpoint_path=tmp_path / "ckpt",
        checkpoint_save_steps=5,
        show_progress=False,
    )
    engine.finetune()
    steps = len(engine.loss_history)
    assert steps >= 8 and len(engine.epoch_loss) == 4
    assert engine.epoch_loss[-1] < engine.epoch_loss[0]  # it learns the training pairs
    assert (tmp_path / "ckpt" / "step_5" / "config.json").is_file()
    assert not torch.allclose(engine.model.linear.weight.cpu(), torch.eye(384))
    model = engine.get_finetuned_model()
    reloaded = AdapterEmbeddingModel(bge, tmp_path / "out")
    a, b = evaluate(val_small, model), evaluate(val_small, reloaded)
    assert a["mrr"].equals(b["mrr"])

    from llama_index.embeddings.adapter import (
        AdapterEmbeddingModel as LlamaIndexAdapterModel,
    )

    theirs = LlamaIndexAdapterModel(bge, str(tmp_path / "out"), device="cpu")
    q = "What was Uber's revenue in 2021?"
    theirs_vec = np.array(theirs.get_query_embedding(q))
    # LlamaIndex's class returns W q as it is; ours returns it at unit length (same direction, same ranking).
    assert theirs_vec / np.linalg.norm(theirs_vec) == pytest.approx(model.get_query_embedding(q), abs=1e-5)


def test_seeded_runs_are_reproducible(tmp_path, train_small, bge):
    weights = []
    for run in range(2):
        engine = EmbeddingAdapterFinetuneEngine(
            train_small,
            bge,
            epochs=2,
            optimizer_params={"lr": 1e-3},
            seed=7,
            unlabeled_corpus={"u1": UBER},
            model_output_path=tmp_path / f"r{run}",
            show_progress=False,
        )
        engine.finetune()
        weights.append(engine.model.linear.weight.detach().cpu().clone())
    assert torch.equal(weights[0], weights[1])


@pytest.mark.parametrize("make", [lambda: TwoLayerNN(384, 64, 384, add_residual=True), lambda: Scale(384)])
def test_other_adapters_train_save_load(tmp_path, train_small, bge, make):
    torch.manual_seed(0)
    engine = EmbeddingAdapterFinetuneEngine(
        train_small,
        bge,
        adapter_model=make(),
        epochs=3,
        optimizer_params={"lr": 1e-3},
        val_fraction=0.0,
        guard=False,
        refit=False,
        model_output_path=tmp_path / "out",
        negatives="corpus",
        show_progress=False,
    )
    engine.finetune()
    assert engine.epoch_loss[-1] < engine.epoch_loss[0]
    model = engine.get_finetuned_model()  # the class is known from the engine
    assert type(model.adapter) is type(engine.model)


def test_wrong_dimension_adapter_is_refused(train_small, bge):
    with pytest.raises(ValueError, match="LinearLayer\\(384, 384\\)"):
        EmbeddingAdapterFinetuneEngine(train_small, bge, adapter_model=LinearLayer(768, 768), show_progress=False)
    with pytest.raises(ValueError, match="dim=768"):
        EmbeddingAdapterFinetuneEngine(train_small, bge, dim=768, show_progress=False)


def test_adapter_model_in_vector_store_index(tmp_path, val_small, bge):
    LinearLayer(384, 384).save(tmp_path / "identity")
    model = AdapterEmbeddingModel(bge, tmp_path / "identity")
    nodes = [TextNode(id_=d, text=t) for d, t in list(val_small.corpus.items())[:10]]
    retriever = VectorStoreIndex(nodes, embed_model=model).as_retriever(similarity_top_k=3)
    qid = next(q for q, docs in val_small.relevant_docs.items() if docs[0] == nodes[0].node_id)
    hits = [n.node.node_id for n in retriever.retrieve(val_small.queries[qid])]
    assert nodes[0].node_id in hits


def test_pseudo_queries_come_from_the_chunk():
    from adapterkit.training.pseudo_queries import pseudo_queries

    corpus = {"u1": UBER, "tiny": "x"}
    pairs = pseudo_queries(corpus, per_chunk=3, words=(8, 24), seed=0)  # question-sized word windows
    assert len(pairs) == 3 and all(d == "u1" and q in UBER and 8 <= len(q.split()) <= 24 for q, d in pairs)
    assert len({q for q, _ in pairs}) == 3 and pairs == pseudo_queries(corpus, per_chunk=3, words=(8, 24), seed=0)
    sentences = pseudo_queries(corpus, per_chunk=2, words=None, seed=0)  # whole sentences
    assert len(sentences) == 2 and all(d == "u1" and q in UBER and q.endswith(".") for q, d in sentences)


def test_a_chunks_pseudo_queries_do_not_depend_on_the_other_chunks(val_small):
    from adapterkit.training.pseudo_queries import pseudo_queries

    corpus = dict(list(val_small.corpus.items())[:8])
    for words in [None, (8, 24)]:
        whole = pseudo_queries(corpus, per_chunk=3, words=words, seed=0)
        without_first = pseudo_queries(dict(list(corpus.items())[1:]), per_chunk=3, words=words, seed=0)
        first = next(iter(corpus))
        assert without_first == [pair for pair in whole if pair[1] != first]  # removing a file re-draws nothing else
        assert whole != pseudo_queries(corpus, per_chunk=3, words=words, seed=1)


def test_held_out_selection_never_ends_worse_than_identity(tmp_path, train_small, bge):
    """A run that overfits (huge lr, many epochs) keeps its best held-out epoch, or the identity."""
    engine = EmbeddingAdapterFinetuneEngine(
        train_small,
        bge,
        epochs=6,
        optimizer_params={"lr": 0.3},
        identity_reg=0.0,
        val_fraction=0.3,
        refit=False,
        model_output_path=tmp_path / "out",
        show_progress=False,
    )
    engine.finetune()
    assert len(engine.val_mrr) == 7
    assert min(engine.val_mrr[1:]) < engine.val_mrr[0]  # training alone would have made it worse
    assert engine.validation_mrr() == max(engine.val_mrr)
    if engine.best_epoch == 0:
        assert torch.allclose(engine.model.linear.weight.cpu(), torch.eye(384))


def test_mined_hard_negatives_exclude_relevant_and_near_positive_chunks(tmp_path, train_small, bge):
    from adapterkit.training.sampling import mine_hard_negatives

    engine = EmbeddingAdapterFinetuneEngine(
        train_small,
        bge,
        negatives="in_batch",
        hard_negatives=3,
        epochs=2,
        optimizer_params={"lr": 1e-3},
        val_fraction=0.0,
        guard=False,
        refit=False,
        model_output_path=tmp_path / "out",
        show_progress=False,
    )
    group = engine.groups[0]
    assert group.hard.shape == (len(group.positives), 3)
    q = group.queries / np.linalg.norm(group.queries, axis=1, keepdims=True)
    d = group.docs / np.linalg.norm(group.docs, axis=1, keepdims=True)
    for i, negs in enumerate(group.hard):
        pos_score = q[i] @ d[group.positives[i]]
        assert group.positives[i] not in negs
        assert all(q[i] @ d[n] < pos_score - 0.05 + 1e-6 for n in negs)
    # Without the guard's margin the closest non-relevant chunks come back.
    loose = mine_hard_negatives(group, 3, margin=-1.0)
    assert (loose != group.hard).any()
    engine.finetune()
    assert engine.epoch_loss[-1] < engine.epoch_loss[0]


def test_refit_trains_every_pair_and_keeps_the_chosen_epoch(tmp_path, train_small, bge):
    """After selection, the adapter is the chosen epoch of a run on all pairs, held-out chunks included."""
    args = dict(epochs=4, batch_size=8, optimizer_params={"lr": 1e-3}, seed=3, show_progress=False)
    engine = EmbeddingAdapterFinetuneEngine(
        train_small,
        bge,
        val_fraction=0.3,
        refit=True,
        model_output_path=tmp_path / "refit",
        model_checkpoint_path=tmp_path / "ckpt",
        checkpoint_save_steps=1,
        **args,
    )
    engine.finetune()
    assert engine.best_epoch and engine.best_epoch > 0, engine.val_mrr  # this setting learns something
    # Every chunk is trained on now: no held-out score that would flatter the adapter.
    assert np.isnan(engine.validation_mrr())
    # The same run on every pair (no hold-out), seen through its per-step checkpoints.
    full = EmbeddingAdapterFinetuneEngine(
        train_small,
        bge,
        val_fraction=0.0,
        guard=False,
        refit=False,
        model_output_path=tmp_path / "full",
        model_checkpoint_path=tmp_path / "full_ckpt",
        checkpoint_save_steps=1,
        **args,
    )
    full.finetune()
    steps_per_epoch = len(full.loss_history) // 4
    assert len(engine.loss_history) == len(full.loss_history)  # loss curve of the refit run
    chosen = LinearLayer.load(tmp_path / "full_ckpt" / f"step_{engine.best_epoch * steps_per_epoch}")
    assert torch.equal(LinearLayer.load(tmp_path / "refit").linear.weight, chosen.linear.weight)
    # Checkpoints are the refit run's: the same steps, the same weights.
    assert sorted(p.name for p in (tmp_path / "ckpt").iterdir()) == sorted(p.name for p in (tmp_path / "full_ckpt").iterdir())
    assert torch.equal(
        LinearLayer.load(tmp_path / "ckpt" / "step_3").linear.weight, LinearLayer.load(tmp_path / "full_ckpt" / "step_3").linear.weight
    )


def test_no_refit_when_the_identity_is_kept(tmp_path, train_small, bge):
    engine = EmbeddingAdapterFinetuneEngine(
        train_small,
        bge,
        epochs=3,
        optimizer_params={"lr": 0.3},
        identity_reg=0.0,
        val_fraction=0.3,
        seed=1,
        model_output_path=tmp_path / "out",
        show_progress=False,
    )
    engine.finetune()
    assert engine.best_epoch == 0, engine.val_mrr  # lr 0.3 only hurts on this split
    assert len(engine.epoch_loss) == 3 and not np.isnan(engine.validation_mrr())  # one run, no refit: chunks still held out
    assert torch.equal(LinearLayer.load(tmp_path / "out").linear.weight, torch.eye(384))


def test_pseudo_queries_asked_of_an_llm_are_kept_and_resumed(tmp_path, train_small, bge, fake_openai):
    """An LLM behind an HTTP API (faked at the HTTP boundary) writes the target corpus's pseudo-queries."""
    corpus = marked_chunks(3)
    args = dict(
        unlabeled_corpus=corpus,
        pseudo_query_llm=openai_llm(fake_openai),
        pseudo_queries_per_chunk=2,
        epochs=1,
        model_output_path=tmp_path / "out",
        show_progress=False,
    )
    engine = EmbeddingAdapterFinetuneEngine(train_small, bge, **args)
    group = engine.groups[1]
    assert group.name == "unlabeled" and len(group.positives) == 6 and fake_openai.requests == 3
    saved = EmbeddingQAFinetuneDataset.from_json(tmp_path / "out" / "pseudo_queries.json")
    assert len(saved.queries) == 6
    for qid, question in saved.queries.items():  # each question is about (echoes the marker of) its own chunk
        assert saved.relevant_docs[qid] == ["node-" + question.split("CHUNK-")[1][0]], question
    engine.finetune()  # the adapter is saved beside the questions
    assert (tmp_path / "out" / "config.json").is_file() and (tmp_path / "out" / "pseudo_queries.json").is_file()
    again = EmbeddingAdapterFinetuneEngine(train_small, bge, **args)  # a rerun asks nothing again
    assert fake_openai.requests == 3 and len(again.groups[1].positives) == 6


def test_finetune_options_and_a_second_call(tmp_path, train_small, bge):
    engine = EmbeddingAdapterFinetuneEngine(
        train_small, bge, epochs=2, optimizer_params={"weight_decay": 0.0}, model_output_path=tmp_path / "out", show_progress=False
    )
    assert engine.config.optimizer_params == {"lr": 1e-3, "weight_decay": 0.0}  # the default lr is kept
    with pytest.raises(TypeError, match="EmbeddingAdapterFinetuneEngine"):
        engine.finetune(val_fraction=0.0)  # the split was made in __init__: setting it here would do nothing
    with pytest.raises(TypeError, match=r"Unknown option\(s\) \['lr'\]"):
        engine.finetune(lr=1e-3)
    with pytest.raises(ValueError, match="epochs"):
        engine.finetune(epochs=None)
    engine.finetune(epochs=3, seed=5)
    assert len(engine.epoch_loss) == 3 and len(engine.val_mrr) == 4
    engine.finetune(epochs=1)  # a second call reports its own run only
    assert len(engine.epoch_loss) == 1 and len(engine.val_mrr) <= 2


def test_pseudo_query_words_are_checked():
    from adapterkit.training.pseudo_queries import pseudo_queries

    with pytest.raises(ValueError, match="shortest <= longest"):
        pseudo_queries({"u1": UBER}, words=(10, 5))


@pytest.mark.integration
def test_target_corpus_memory_finds_chunks_by_their_sentences(tmp_path, train_small, val_small, bge):
    """With an unlabeled corpus a memory of its sentences is saved beside the adapter; without, none."""
    from adapterkit.data.documents import chunk_sentences
    from adapterkit.memory.corpus_memory import CorpusMemory
    from adapterkit.metrics import exact_search

    args = dict(unlabeled_corpus=val_small.corpus, epochs=2, show_progress=False)
    with_memory = EmbeddingAdapterFinetuneEngine(train_small, bge, model_output_path=tmp_path / "mem", memory_weight=0.5, **args)
    with_memory.finetune()
    without = EmbeddingAdapterFinetuneEngine(train_small, bge, model_output_path=tmp_path / "plain", corpus_memory=False, **args)
    without.finetune()
    sentences = [(s, d) for d, text in val_small.corpus.items() for s in chunk_sentences(text)]
    saved = CorpusMemory.load(tmp_path / "mem" / "memory" / "sentences")
    assert len(saved.keys) == len(sentences) > 0 and saved.weight == 0.5  # the memory options are saved
    assert isinstance(with_memory.model, LinearLayer)  # what trains is the adapter; the memory sits beside it
    assert torch.equal(with_memory.model.linear.weight, without.model.linear.weight)  # the same training run
    assert AdapterEmbeddingModel(bge, tmp_path / "plain").memories == []
    from llama_index.embeddings.adapter import (
        AdapterEmbeddingModel as LlamaIndexAdapterModel,
    )

    theirs = LlamaIndexAdapterModel(bge, str(tmp_path / "mem"), device="cpu")  # the engine's folder, as it is
    assert torch.equal(theirs._adapter.linear.weight, with_memory.model.linear.weight.cpu())

    # Searching the corpus with one of its own sentences: the memory ranks that sentence's chunk first more often.
    doc_ids = list(val_small.corpus)
    docs = bge.get_text_embedding_batch([val_small.corpus[d] for d in doc_ids])
    relevant = [[doc_ids.index(d)] for _, d in sentences]
    top1 = {}
    for name, engine in (("memory", with_memory), ("plain", without)):
        model = engine.get_finetuned_model()
        queries = model.embed([s for s, _ in sentences], "query")
        _, _, ranks = exact_search(queries, np.asarray(docs), 1, relevant)
        top1[name] = float(np.mean([r.min() == 1 for r in ranks]))
    assert [type(m) for m in with_memory.get_finetuned_model().memories] == [CorpusMemory]  # train_small's chunks are not Uber's
    assert top1["memory"] > top1["plain"], top1

    # Training on from a saved adapter starts from its weights; a memory is composed by whoever queries.
    again = EmbeddingAdapterFinetuneEngine.from_model_path(
        train_small, bge, tmp_path / "mem", epochs=1, show_progress=False, model_output_path=tmp_path / "again"
    )
    assert isinstance(again.model, LinearLayer) and torch.equal(again.model.linear.weight.cpu(), with_memory.model.linear.weight.cpu())
    composed = AdapterEmbeddingModel(bge, tmp_path / "plain", memory=tmp_path / "mem" / "memory")  # every memory in the folder
    assert len(composed.memories[0].keys) == len(sentences)

    # A cap on keys per chunk: the same training, a memory of at most one sentence per chunk, saved with its cap.
    capped = EmbeddingAdapterFinetuneEngine(train_small, bge, model_output_path=tmp_path / "capped", memory_keys_per_chunk=1, **args)
    capped.finetune()
    saved = CorpusMemory.load(tmp_path / "capped" / "memory" / "sentences")
    assert saved.max_keys == 1 and len(saved.keys) == sum(bool(chunk_sentences(t)) for t in val_small.corpus.values()) < len(sentences)
    assert torch.equal(capped.model.linear.weight, without.model.linear.weight)


def test_a_stale_memory_is_removed_and_nothing_else(tmp_path, train_small, val_small, bge):
    args = dict(epochs=1, show_progress=False, model_output_path=tmp_path / "out")
    EmbeddingAdapterFinetuneEngine(train_small, bge, unlabeled_corpus=val_small.corpus, **args).finetune()
    assert (tmp_path / "out" / "memory" / "sentences" / "memory.json").is_file()
    engine = EmbeddingAdapterFinetuneEngine(train_small, bge, **args)  # no memory now, same folder
    engine.finetune()
    assert not (tmp_path / "out" / "memory" / "sentences").exists()  # it would have been composed with the new adapter
    assert engine.get_finetuned_model().memories == []
    (tmp_path / "out" / "memory").mkdir(exist_ok=True)  # a file of the user's own stays
    (tmp_path / "out" / "memory" / "notes.txt").write_text("mine")
    engine.finetune()
    assert (tmp_path / "out" / "memory" / "notes.txt").read_text() == "mine"


@pytest.mark.integration
def test_labelled_questions_of_the_searched_corpus_become_a_memory(tmp_path, train_small, bge):
    """When the training questions' chunks are in the corpus that will be searched, they are keys of a second
    memory, whose pull is chosen on held-out questions."""
    from adapterkit.memory.corpus_memory import CorpusMemory

    # Every question asked twice (as users ask the same things again): a held-out question's twin points at its chunk.
    twice = EmbeddingQAFinetuneDataset(
        queries={**train_small.queries, **{q + "-again": t for q, t in train_small.queries.items()}},
        corpus=train_small.corpus,
        relevant_docs={**train_small.relevant_docs, **{q + "-again": d for q, d in train_small.relevant_docs.items()}},
    )
    engine = EmbeddingAdapterFinetuneEngine(
        twice,
        bge,
        unlabeled_corpus=train_small.corpus,
        epochs=1,
        question_memory_weights=(0.0, 1.0),
        question_memory_temperatures=(50.0,),
        model_output_path=tmp_path / "out",
        show_progress=False,
    )
    choice = engine.memory_choice
    assert set(choice["mrr@10"]) == {"0.0/0.0/0.25", "1.0/50.0/0.25"}  # the sentence memory keeps its label-free pull
    assert choice["held_out_questions"] == len(twice.queries) and choice["folds"] == 5  # each question scored once, unseen
    assert choice["default"] == "0.0/0.0/0.25"  # the label-free choice the questions had to beat
    assert choice["question_weight"] == 1.0 and choice["mrr@10"][f"1.0/50.0/{choice['sentence_weight']}"] == max(choice["mrr@10"].values())
    questions = engine.memories["questions"]
    assert len(questions.keys) == sum(len(v) for v in twice.relevant_docs.values())  # then built from every question
    assert set(questions.chunk_ids) == {d for v in train_small.relevant_docs.values() for d in v}
    engine.finetune()
    saved = CorpusMemory.load(tmp_path / "out" / "memory" / "questions")
    assert (saved.weight, saved.temperature) == (1.0, 50.0)
    if choice["sentence_weight"]:  # the sentence memory is saved with the pull that was chosen, not the last one tried
        assert CorpusMemory.load(tmp_path / "out" / "memory" / "sentences").weight == choice["sentence_weight"]
    else:
        assert "sentences" not in engine.memories
    with_memory = evaluate(train_small, engine.get_finetuned_model(), top_k=1)["is_hit"].mean()
    without = evaluate(train_small, engine.get_finetuned_model(memory=False), top_k=1)["is_hit"].mean()
    assert with_memory > max(without, 0.9), (with_memory, without)
    never = EmbeddingAdapterFinetuneEngine(
        train_small,
        bge,
        unlabeled_corpus=train_small.corpus,
        epochs=0,
        question_memory_weights=(0.0,),
        model_output_path=tmp_path / "never",
        show_progress=False,
    )
    assert "questions" not in never.memories and never.memory_choice["question_weight"] == 0.0


def test_defaults_do_not_depend_on_other_arguments(tmp_path, train_small, bge):
    """Reading a target corpus adds data, never changes an option the caller left unset."""
    from adapterkit.training.config import FinetuneConfig

    plain = EmbeddingAdapterFinetuneEngine(train_small, bge, model_output_path=tmp_path / "a", show_progress=False)
    corpus = dict(list(train_small.corpus.items())[:3])  # any searched corpus: a few chunks keep it quick
    target = EmbeddingAdapterFinetuneEngine(
        train_small, bge, unlabeled_corpus=corpus, model_output_path=tmp_path / "b", show_progress=False
    )
    assert plain.config == target.config == FinetuneConfig()


def test_one_registry_says_when_each_option_may_be_set():
    import dataclasses

    from adapterkit.training.config import FIXED_AT_CONSTRUCTION, RUN_OPTIONS, FinetuneConfig

    fields = {f.name: f for f in dataclasses.fields(FinetuneConfig)}
    assert all({"fixed", "run"} <= set(f.metadata) for f in fields.values())  # every option is classified
    assert {"val_fraction", "negatives", "hard_negatives", "pseudo_queries_per_chunk"} <= FIXED_AT_CONSTRUCTION
    assert {"epochs", "optimizer_params", "loss_class", "seed"} <= RUN_OPTIONS
    assert not {"verbose", "num_threads", "checkpoint_save_steps", "memory_weight"} & RUN_OPTIONS


@pytest.mark.parametrize(
    "options, message",
    [
        ({"hard_negatives": 3}, "negatives='in_batch'"),  # every chunk is a negative already with "corpus"
        ({"val_fraction": 0.0}, "guard=False and refit=False"),  # nothing held out: nothing to choose, guard or refit
        ({"val_fraction": 0.0, "guard": False}, "guard=False and refit=False"),
        ({"num_threads": 0}, "num_threads"),
        ({"memory_keys_per_chunk": 2}, "give unlabeled_corpus too"),  # no searched corpus: no memory to cap
        ({"memory_keys_per_chunk": 0}, "memory_keys_per_chunk must be"),
        ({"memory_keys_per_chunk": 2, "corpus_memory": False}, "drop one of them"),
    ],
)
def test_an_option_that_cannot_take_effect_is_an_error(train_small, bge, options, message):
    with pytest.raises(ValueError, match=message):
        EmbeddingAdapterFinetuneEngine(train_small, bge, show_progress=False, **options)


def test_num_threads_none_leaves_torch_as_it_is(tmp_path, train_small, bge):
    engine = EmbeddingAdapterFinetuneEngine(train_small, bge, num_threads=None, epochs=1, model_output_path=tmp_path, show_progress=False)
    assert engine.config.num_threads is None  # kept, not dropped for the default (1)
    before = torch.get_num_threads()
    engine.finetune()
    assert torch.get_num_threads() == before


def test_the_loss_is_a_parameter(tmp_path, train_small, bge):
    from adapterkit.training.losses import MultipleNegativesRankingLoss

    calls = []

    class Counted(MultipleNegativesRankingLoss):
        def forward(self, *args):
            calls.append(1)
            return super().forward(*args)

    engine = EmbeddingAdapterFinetuneEngine(
        train_small, bge, loss_class=Counted, epochs=1, refit=False, model_output_path=tmp_path, show_progress=False
    )
    engine.finetune()
    assert len(calls) == len(engine.loss_history) > 0


def test_the_schedule_counts_every_epochs_batches(tmp_path, train_small, bge):
    from adapterkit.training.sampling import epoch_batches

    lrs = []

    class Recorded(torch.optim.AdamW):
        def step(self, closure=None):
            lrs.append(self.param_groups[0]["lr"])
            return super().step(closure)

    options = dict(epochs=6, batch_size=16, negatives="in_batch", shuffle=True, no_duplicates=True, seed=3)
    engine = EmbeddingAdapterFinetuneEngine(
        train_small,
        bge,
        optimizer_class=Recorded,
        optimizer_params={"lr": 1e-3},
        warmup_ratio=0.1,
        val_fraction=0.0,
        guard=False,
        refit=False,
        model_output_path=tmp_path,
        show_progress=False,
        **options,
    )
    generator = torch.Generator().manual_seed(3)
    rows = [g.all_rows() for g in engine.groups]
    counts = [len(epoch_batches(engine.groups, rows, 16, True, True, generator)) for _ in range(6)]
    assert len(set(counts)) > 1  # repeated chunks are deferred differently in each epoch
    engine.finetune()
    total, warmup = engine.total_steps, int(engine.total_steps * 0.1)
    assert len(lrs) == len(engine.loss_history) == total == sum(counts)
    assert all(lr > 0 for lr in lrs)  # no step falls past the end of the schedule
    assert lrs[-1] == pytest.approx(1e-3 / (total - warmup))  # and the decay ends on the last step


def test_memory_weight_sets_the_sentence_pull_at_construction_and_finetune_refuses_to_change_it(tmp_path, val_small, bge):
    """The sentence memory is built with its pull at construction, with or without a question memory chosen beside it."""
    from adapterkit.memory.corpus_memory import CorpusMemory

    train, target = val_small, val_small.corpus  # questions whose chunks are in the searched corpus
    for question_memory in (True, False):
        engine = EmbeddingAdapterFinetuneEngine(
            train,
            bge,
            unlabeled_corpus=target,
            question_memory=question_memory,
            memory_weight=0.5,
            memory_temperature=40.0,
            epochs=1,
            model_output_path=tmp_path / str(question_memory),
            show_progress=False,
        )
        assert (engine.memory_choice is not None) == question_memory
        for option, value in (("memory_weight", 0.4), ("memory_temperature", 30.0)):
            with pytest.raises(ValueError, match=rf"finetune\(\) cannot change \['{option}'\]"):
                engine.finetune(**{option: value})
        engine.finetune(memory_weight=0.5)  # the value it has is no change
        saved = CorpusMemory.load(tmp_path / str(question_memory) / "memory" / "sentences")
        kept = engine.memories["sentences"]
        assert (saved.weight, saved.temperature) == (0.5, 40.0) == (kept.weight, kept.temperature)


def test_choosing_memories_keeps_the_sentence_memory_with_the_pull_it_was_built_with(val_small, bge):
    from adapterkit import CorpusMemory
    from adapterkit.training.config import FinetuneConfig
    from adapterkit.training.memory_choice import choose_memories

    corpus = dict(val_small.corpus)
    sentences = CorpusMemory.from_corpus(corpus, bge, weight=0.4)  # not FinetuneConfig's 0.25: the memory's own pull counts
    questions = embed_texts(bge, list(val_small.queries.values()), "query", show_progress=False)
    owners = {r: val_small.relevant_docs[q] for r, q in enumerate(val_small.queries)}
    docs = embed_texts(bge, list(corpus.values()), "text", show_progress=False)
    kept, choice = choose_memories(questions, owners, list(corpus), docs, sentences, FinetuneConfig())
    assert sentences.weight == 0.4 == choice["sentence_weight"]  # the candidates were copies; the label-free pull is never vetoed
    assert kept["sentences"] is sentences


def test_verbose_messages_go_through_logging(tmp_path, train_small, bge, caplog):
    import logging

    engine = EmbeddingAdapterFinetuneEngine(train_small, bge, epochs=2, verbose=True, model_output_path=tmp_path, show_progress=False)
    with caplog.at_level(logging.INFO, logger="adapterkit"):
        engine.finetune()
    epochs = [r for r in caplog.records if r.name == "adapterkit.training.loop" and "mean loss" in r.getMessage()]
    assert len(epochs) >= 2  # one line per epoch (and per refit epoch)


def test_only_questions_count_as_evidence_about_the_searched_corpus():
    """A relevant_docs entry with no question behind it is no labelled question about the corpus."""
    from adapterkit.data.datasets import EmbeddingQAFinetuneDataset
    from adapterkit.training.memories import questions_on_target

    corpus = {"u1": "Uber's drivers are independent contractors."}
    stray = EmbeddingQAFinetuneDataset(queries={"q1": "Who drives?"}, corpus={"l1": "Lyft."}, relevant_docs={"q1": ["l1"], "q9": ["u1"]})
    assert not questions_on_target([stray], corpus)
    asked = EmbeddingQAFinetuneDataset(queries={"q1": "Who drives?"}, corpus=corpus, relevant_docs={"q1": ["u1"]})
    assert questions_on_target([stray, asked], corpus)
