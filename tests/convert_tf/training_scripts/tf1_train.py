"""A TF1 training script as data scientists wrote them (run as a script by the tests).

``python tf1_train.py OUT MODE`` trains a small classifier for 30 steps (labels, a loss, Adam, a
learning-rate and keep-probability placeholder with defaults, an ``is_training`` switch for batch
norm, accuracy, summaries, a global step) and saves it the way MODE says:

* ``checkpoint``: a ``tf.compat.v1.train.Saver`` every 10 steps inside the training loop;
* ``frozen``: a frozen GraphDef whose output nodes include the loss, accuracy, summaries and the
  gradients (what ``freeze_graph`` leaves when given every node name the script had at hand);
* ``savedmodel``: ``SavedModelBuilder`` with no signature at all (the whole training graph).

It then writes ``OUT/expected.npz``: the input batch and what the trained model predicts for it
(inference mode: ``keep_prob`` 1, ``is_training`` False), computed by TensorFlow in this process.
"""

import os
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
import numpy as np
import tensorflow as tf

v1 = tf.compat.v1
v1.disable_v2_behavior()  # a TF1 script: reference variables, v1 control flow, sessions


def dense(t, units, name):
    with v1.variable_scope(name):
        w = v1.get_variable("kernel", [t.shape[1], units], initializer=v1.glorot_uniform_initializer(seed=1))
        b = v1.get_variable("bias", [units], initializer=v1.zeros_initializer())
        return tf.nn.bias_add(tf.matmul(t, w), b)


def batch_norm(h, is_training):
    """Batch statistics while training, moving averages otherwise (updates in UPDATE_OPS)."""
    with v1.variable_scope("bn"):
        size = h.shape[-1]
        moving_mean = v1.get_variable("moving_mean", [size], initializer=v1.zeros_initializer(), trainable=False)
        moving_var = v1.get_variable("moving_variance", [size], initializer=v1.ones_initializer(), trainable=False)
        gamma = v1.get_variable("gamma", [size], initializer=v1.ones_initializer())
        beta = v1.get_variable("beta", [size], initializer=v1.zeros_initializer())
        batch_mean, batch_var = tf.nn.moments(h, [0])
        for var, value in ((moving_mean, batch_mean), (moving_var, batch_var)):
            v1.add_to_collection(v1.GraphKeys.UPDATE_OPS, v1.assign(var, 0.9 * var + 0.1 * value))
        mean, var = tf.cond(is_training, lambda: (batch_mean, batch_var), lambda: (moving_mean, moving_var))
        return tf.nn.batch_normalization(h, mean, var, beta, gamma, 1e-3)


def main(out: Path, mode: str) -> None:
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    features = rng.normal(size=(256, 8)).astype("float32")
    targets = (features[:, 0] > 0).astype("int64") + (features[:, 1] > 0.5)

    x = v1.placeholder(tf.float32, [None, 8], name="x")
    y = v1.placeholder(tf.int64, [None], name="y")
    keep_prob = v1.placeholder_with_default(1.0, [], name="keep_prob")
    learning_rate = v1.placeholder_with_default(0.01, [], name="learning_rate")
    is_training = v1.placeholder_with_default(False, [], name="is_training")
    global_step = v1.train.get_or_create_global_step()
    with v1.variable_scope("net"):
        hidden = batch_norm(tf.nn.relu(dense(x, 16, "hidden")), is_training)
        hidden = tf.nn.dropout(hidden, rate=1 - keep_prob)
        logits = dense(hidden, 3, "logits")
    probs = tf.nn.softmax(logits, name="probs")
    predictions = tf.argmax(logits, 1, name="predictions")
    loss = v1.losses.sparse_softmax_cross_entropy(labels=y, logits=logits)
    accuracy = tf.reduce_mean(tf.cast(tf.equal(predictions, y), tf.float32), name="accuracy")
    v1.summary.scalar("loss", loss)
    v1.summary.scalar("accuracy", accuracy)
    summaries = v1.summary.merge_all()
    optimizer = v1.train.AdamOptimizer(learning_rate)
    grads_and_vars = optimizer.compute_gradients(loss)
    with tf.control_dependencies(v1.get_collection(v1.GraphKeys.UPDATE_OPS)):
        train_op = optimizer.apply_gradients(grads_and_vars, global_step=global_step)
    saver = v1.train.Saver(max_to_keep=5)

    with v1.Session() as session:
        session.run(v1.global_variables_initializer())
        for step in range(1, 31):
            batch = rng.choice(len(features), 32, replace=False)
            feed = {x: features[batch], y: targets[batch], keep_prob: 0.8, is_training: True, learning_rate: 0.05}
            session.run([train_op, summaries, loss], feed)
            if mode == "checkpoint" and step % 10 == 0:
                saver.save(session, str(out / "model.ckpt"), global_step=global_step)
        sample = features[:5]
        want = session.run(probs, {x: sample})  # the defaults: keep_prob 1, is_training False
        if mode == "frozen":
            keep = [probs.op.name, predictions.op.name, accuracy.op.name, loss.op.name, summaries.op.name]
            keep += [g.op.name for g, _ in grads_and_vars]
            frozen = v1.graph_util.convert_variables_to_constants(session, session.graph.as_graph_def(), keep)
            (out / "frozen_model.pb").write_bytes(frozen.SerializeToString())
        elif mode == "savedmodel":
            builder = v1.saved_model.Builder(str(out / "export"))
            builder.add_meta_graph_and_variables(session, [v1.saved_model.tag_constants.TRAINING])
            builder.save()
    np.savez(out / "expected.npz", x=sample, probs=want)


if __name__ == "__main__":
    main(Path(sys.argv[1]), sys.argv[2])
