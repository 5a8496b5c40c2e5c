"""InstaGen's idea on synthscene: a grounding head reads the generator's own features and
names boxes by text embeddings, so a class the teacher detector never saw is just another
name (``head``: the network; ``matching``: losses; ``text``: class embeddings;
``train``: ``synthscene train-grounding``)."""
