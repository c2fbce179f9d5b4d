-- Search by words (issue 24): the backbone's own ImageNet classes as tags, and the WordNet
-- terms that name each class or a synset above it ("tabby" -> cat -> feline -> animal).
CREATE TABLE IF NOT EXISTS image_tags (
    image_id   BIGINT NOT NULL,
    model_key  VARCHAR NOT NULL,           -- the tagging backbone (its pretrained head)
    tag        VARCHAR NOT NULL,           -- the class's name, e.g. "tabby, tabby cat"
    synset     VARCHAR NOT NULL,           -- its WordNet id, e.g. n02123045
    score      DOUBLE NOT NULL,            -- the head's probability
    rank       INTEGER NOT NULL            -- 1 = the most likely class
);
CREATE TABLE IF NOT EXISTS imagenet_terms (
    synset    VARCHAR NOT NULL,            -- an ImageNet class
    term      VARCHAR NOT NULL,            -- a word naming it or a synset above it
    distance  INTEGER NOT NULL             -- 0: the class's own name; 1: its parent; ...
);
CREATE OR REPLACE VIEW image_tags_expanded AS
    SELECT t.image_id, i.path, t.model_key, e.term, e.distance, t.tag, t.synset, t.score, t.rank
    FROM image_tags t
    JOIN imagenet_terms e USING (synset)
    JOIN images i USING (image_id);
