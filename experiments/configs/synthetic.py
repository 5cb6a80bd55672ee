"""The synthetic default: a world with known ground truth, small enough for 2 CPU cores.

Launch (from the repository root):
  python -m experiments.train --config=experiments/configs/synthetic.py --workdir=runs/synthetic
Variants: `--config=experiments/configs/synthetic.py:runlocal` shrinks everything
for tests and CI (seconds, not minutes). Override any field with
`--config.a.b=value`, e.g. `--config.num_steps=500`.

Expected on 2 CPU cores (RESULTS.md has the recorded runs): 7-11 minutes with a fresh
install, by the machine; on the 2,000 held-out users, retrieval HR@10 0.7-0.8 of the oracle's
(as much as the history can tell; the ratio's standard error is 0.06) and 1.8-2.4x
popularity's; ranking AUC (engaged vs none) that of the history oracle, 0.028-0.030 below the
oracle's (the share of the oracle's lead that no model of the history can close). Then
`python -m experiments.evaluate_generation --workdir=...` for budgets and multi-token
generation.
"""

import dataclasses

import ml_collections

from unipinrec.data.synthetic import SyntheticConfig


def get_config(variant: str = "") -> ml_collections.ConfigDict:
  """The run configuration; `variant` is "" (default) or "runlocal"."""
  config = ml_collections.ConfigDict()
  config.seed = 0
  config.batch_size = 64  # global batch of blended examples
  # 1,600 and 1,800 steps gave the same figures (RESULTS.md); 1,400 leave a fresh install room
  # within 15 minutes on a slow 2-core machine (1,600 took 14.5 of them).
  config.num_steps = 1400
  config.log_every = 100
  config.eval_every = 0  # validation (public data only): steps between checks, 0 = never
  config.patience = 0  # validations without improvement before stopping, 0 = never
  config.eval_batch_size = 256

  # Devices per mesh axis (unipinrec/sharding.py); -1 takes all the devices the others leave.
  config.mesh = ml_collections.ConfigDict()
  config.mesh.data = 1  # replicas: batch split, parameters copied
  config.mesh.fsdp = -1  # batch, parameters and optimizer state split
  config.mesh.model = 1  # attention heads, MLP hidden units and the item vocabulary split

  config.data = ml_collections.ConfigDict()
  # Users never trained on, evaluated instead: 2,000 of the 6,000, so that HR@10 has a
  # standard error of 0.006 (500 users gave 0.012, as large as the gap to popularity).
  config.data.holdout_fraction = 1 / 3
  config.data.max_slates = 16  # impression slates per blended example
  # Training windows' ends 16 actions apart (0: max_length, no overlap): each slate is seen
  # with several history prefixes, and slates one window's choice drops are kept by another.
  config.data.window_stride = 16
  config.data.eval_slates_per_user = 5  # last slates of each held-out user that are ranked
  # Every knob of the world (SyntheticConfig) is here, so each one can be overridden as
  # --config.data.synthetic.NAME=value; the lines below set the default world's own values.
  config.data.synthetic = ml_collections.ConfigDict(
    {field.name: field.default for field in dataclasses.fields(SyntheticConfig)}
  )
  # 4,000 training users, not 2,000: with 2,000 the model's ranking AUC stayed 0.003-0.005
  # below the history oracle's; with 4,000 it is within 0.002 of it on four draws (RESULTS.md).
  config.data.synthetic.num_users = 6000
  config.data.synthetic.num_items = 5000
  config.data.synthetic.num_topics = 20
  config.data.synthetic.seed = 0  # the world's own seed, independent of training's
  config.data.synthetic.session_momentum = 0.0  # short-term intent inside a visit (0: none)
  config.data.synthetic.multi_interest = False  # a session resumes one of several interests

  config.model = ml_collections.ConfigDict()
  config.model.max_length = 64  # L: longest history the transformer sees
  config.model.embed_dim = 64  # D: item embeddings and transformer width
  config.model.action_dim = 16  # projected action + time + surface features
  config.model.num_layers = 2
  config.model.num_heads = 2
  config.model.mlp_dim = 256
  config.model.head_hidden_dim = 128  # retrieval MLP and each task head
  config.model.temperature = 0.05  # retrieval logits = cosine / temperature
  # On tokens and residual branches, training only: without it the model ranks the
  # training users' slates above the history oracle and the held-out users' far below.
  config.model.dropout_rate = 0.1
  config.model.dtype = "float32"
  # Multi-token generation: one query per offset from one pass ("next action",
  # +2 min later in the visit, +1 h = the next visit, +2 days); (0.0,) turns it off.
  config.model.offsets_seconds = (0.0, 120.0, 3600.0, 172800.0)
  # Attention: "xla" (pure JAX) or "pallas" (Triton kernels on GPU, interpret mode elsewhere).
  config.model.kernel = "xla"
  config.model.item_table_multiple = 1024  # item table rows padded to a multiple (even split)
  # Learned recency bias on attention (T5 buckets of query-key distance; 0: off). 32 buckets:
  # ranking AUC +0.006 on two worlds, retrieval HR@10 +7 users and +0 (RESULTS.md).
  config.model.relative_position_buckets = 32
  # Learned bias on the seconds between actions (log2 buckets; 0: off; pure-JAX attention
  # only). 32 moved ranking AUC by +0.001 and -0.001 on two worlds: noise (RESULTS.md).
  config.model.time_bias_buckets = 0
  # Task heads: one softmax over (none, click, save), as an action has one outcome; ranking
  # AUC engaged +0.002 and +0.005 on two worlds against independent sigmoids (RESULTS.md).
  config.model.exclusive_outcomes = True
  # A learned retrieval logit bias per item (served as one more index dimension). On this
  # world it moved HR@10 by +1 and -5 users and AUC by +-0.0007 on two draws: off (RESULTS.md).
  config.model.item_bias = False

  config.step = ml_collections.ConfigDict()
  config.step.mask_prob = 0.2  # MAM: share of past actions replaced by [MASK]
  config.step.loss = ml_collections.ConfigDict()
  config.step.loss.retrieval_weight = 1.0
  config.step.loss.mam_weight = 0.5
  # 2, not 1: ranking AUC +0.007 on two worlds, retrieval within its noise (RESULTS.md).
  config.step.loss.ranking_weight = 2.0
  # Multi-token offset targets: at weight 1 they doubled the gradient norm (clipped at 1),
  # and ranking AUC fell 0.03; 0.2 keeps them a side task.
  config.step.loss.offset_weight = 0.2
  # Offset t learns the first action t seconds ahead and those up to a day past t.
  config.step.loss.offset_window_seconds = 86400.0
  config.step.loss.future_window_seconds = 86400.0  # positives: actions within a day after
  config.step.loss.max_future_positives = 8
  config.step.loss.intra_session = False  # PinRec's relaxation: whole session is positive
  config.step.loss.num_random_negatives = 256
  config.step.loss.num_inbatch_negatives = 256
  config.step.loss.logq_correction = True
  # The share of it the offset queries' loss keeps: at 0.8 their lists beat autoregressive
  # generation on recall and on diversity across users on two worlds; at 1 they hedged with
  # popular items (2% fewer distinct items), at 0 they lost 5% recall (RESULTS.md).
  config.step.loss.offset_logq_strength = 0.8
  config.step.loss.full_softmax = False  # every item a negative: for small catalogues only
  config.step.loss.exclude_seen_negatives = False  # items already acted on are no negatives
  config.step.loss.offset_anchor_stride = 4  # multi-token offsets: every 4th anchor (cost)
  # Negatives' log-sum-exp: "xla" materialises the logits, "pallas" tiles them (BUILD.md).
  config.step.loss.kernel = "xla"
  # With "xla", the log-sum-exp 256 anchors at a time, recomputed for the gradient
  # (kernels/chunked_softmax.py): the same loss, its logits kept in cache, the softmax 3.5x
  # faster on 2 CPU cores (RESULTS.md). 0 materialises every logit at once.
  config.step.loss.chunk_anchors = 256

  config.optimizer = ml_collections.ConfigDict()
  # Dense weights. 2e-3: ranking AUC +0.004 and +0.003 on two worlds against 1e-3, retrieval
  # within its noise; 3e-3 cost 11 users of HR@10 (RESULTS.md).
  config.optimizer.learning_rate = 2e-3
  config.optimizer.embedding_learning_rate = 1e-2  # the item table (see OptimizerConfig)
  config.optimizer.warmup_steps = 100
  config.optimizer.decay_steps = config.get_ref("num_steps")
  config.optimizer.final_learning_rate_fraction = 0.05
  config.optimizer.weight_decay = 1e-4
  config.optimizer.clip_norm = 1.0
  config.optimizer.ema_decay = 0.0  # evaluate a moving average of the parameters (0: off)

  # The item table's start (unipinrec/train/item_init.py): "random", or "cooccurrence"
  # (rows from the training logs' item co-occurrence, which skips the plateau
  # a random table spends its first ~800 steps on).
  config.item_init = ml_collections.ConfigDict()
  config.item_init.method = "cooccurrence"
  config.item_init.window = 20  # actions apart that still co-occur: a few sessions
  config.item_init.stddev = 0.1  # row scale, as the random draw's
  config.item_init.seed = 0

  config.checkpoint = ml_collections.ConfigDict()
  config.checkpoint.every_steps = 500
  config.checkpoint.keep = 3

  # `python -m experiments.evaluate_generation`: budgets and multi-token generation.
  config.generation = ml_collections.ConfigDict()
  config.generation.k = 10  # items per generated vector: unordered recall@k
  config.generation.vectors = (1, 2, 4)  # query vectors per user compared
  config.generation.horizon_seconds = 345_600.0  # a held-out user's last 4 days: the future
  config.generation.budget_k = 20  # list length of the budget sweep
  config.generation.budget_points = 5  # budgets from all-click to all-save
  config.generation.merge_cosine = 0.98  # outcome queries this close share one search
  config.generation.timing_repeats = 5  # timed passes; the median is reported

  # Serving (experiments.recommend, experiments.bench_serving): the usearch index of the items.
  config.index = ml_collections.ConfigDict()
  config.index.dtype = "f16"  # vector storage in the graph: f32, f16 or i8
  config.index.connectivity = 16  # HNSW M: edges per node and layer
  config.index.expansion_add = 128  # efConstruction: search depth while inserting
  config.index.expansion_search = 256  # ef: search depth per query
  config.index.exact = False  # brute-force search instead of the graph (exact, slow)
  config.serving = ml_collections.ConfigDict()
  config.serving.num_candidates = 256  # K: retrieved and ranked per user
  config.serving.num_results = 20  # ranked items returned per user
  config.serving.batch_size = 32  # users per compiled call
  config.serving.merge_cosine = 0.98  # budgets: outcome queries this close share one search
  config.serving.view = True  # memory-map the index rather than read it into memory

  if variant == "runlocal":
    config.num_steps = 40
    config.log_every = 10
    config.batch_size = 8
    config.eval_batch_size = 64
    config.optimizer.warmup_steps = 5
    # Pinned, not the default's: the tests' tolerances on this tiny world were set at it.
    config.optimizer.learning_rate = 1e-3
    config.checkpoint.every_steps = 10
    config.data.max_slates = 4
    config.data.window_stride = 8
    config.data.synthetic.num_users = 120
    config.data.holdout_fraction = 0.2
    config.data.synthetic.num_items = 600
    config.data.synthetic.num_topics = 5
    config.data.synthetic.requests_per_user = 20
    config.model.max_length = 16
    config.model.embed_dim = 16
    config.model.action_dim = 8
    config.model.mlp_dim = 32
    config.model.head_hidden_dim = 16
    config.step.loss.num_random_negatives = 32
    config.step.loss.num_inbatch_negatives = 32
    config.generation.timing_repeats = 1
    config.serving.num_candidates = 64
    config.serving.batch_size = 8
  elif variant:
    raise ValueError(f"unknown variant {variant!r}; expected '' or 'runlocal'")
  return config
