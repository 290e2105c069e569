"""An LSTM word language model, as pytorch/examples' word_language_model (main.py + model.py).

The corpus needs no download: the docstrings of a fixed list of Python standard-library
modules, read at run time (lower-cased words, one sentence per docstring line, rare words
as <unk>), split 80/10/10 into train, validation and test.

    python examples/word_lm.py                   # ~30 s per epoch on one CPU thread
    python examples/word_lm.py --epochs 2 --nhid 100 --emsize 100 --words 40000

Prints the loss and perplexity while training, the validation perplexity after each epoch
(and, to compare against, the validation perplexity of a uniform model and of the training
text's word frequencies) and the test perplexity of the best model, saved to --save.
"""
import argparse
import ast
import collections
import math
import os
import re
import sysconfig
import time

import dtrain
import dtrain.nn as nn
import dtrain.nn.functional as F

# stdlib files (relative to the stdlib directory) whose docstrings make the corpus; missing
# ones (other Python versions) are skipped
SOURCES = [
    "argparse.py", "collections/__init__.py", "textwrap.py", "difflib.py", "inspect.py", "logging/__init__.py",
    "functools.py", "subprocess.py", "tarfile.py", "typing.py", "dataclasses.py", "enum.py", "json/__init__.py",
    "json/decoder.py", "http/client.py", "urllib/parse.py", "configparser.py", "unittest/case.py", "doctest.py",
    "pydoc.py", "shutil.py", "tempfile.py", "threading.py", "random.py", "statistics.py", "fractions.py", "socket.py",
    "string.py", "csv.py", "pickle.py", "ftplib.py", "smtplib.py", "imaplib.py", "calendar.py", "locale.py",
    "gettext.py", "optparse.py", "pdb.py", "traceback.py", "warnings.py", "weakref.py", "email/message.py",
    "email/utils.py", "asyncio/tasks.py", "asyncio/events.py", "contextlib.py", "copy.py", "abc.py", "heapq.py",
    "bisect.py", "codecs.py", "os.py", "glob.py", "fnmatch.py", "platform.py", "mailbox.py", "cmd.py", "shlex.py",
    "sched.py", "queue.py", "selectors.py", "ipaddress.py", "hmac.py", "secrets.py", "base64.py", "quopri.py",
    "wave.py", "colorsys.py", "plistlib.py", "netrc.py", "xml/dom/minidom.py", "xml/etree/ElementTree.py",
    "html/parser.py", "urllib/request.py", "http/server.py", "http/cookiejar.py", "socketserver.py",
    "xmlrpc/client.py", "ast.py", "dis.py", "tokenize.py", "pkgutil.py", "modulefinder.py", "timeit.py", "trace.py",
    "pstats.py", "profile.py", "_pydecimal.py", "datetime.py", "numbers.py", "operator.py", "reprlib.py",
    "pprint.py", "concurrent/futures/_base.py", "multiprocessing/pool.py", "multiprocessing/managers.py",
    "zipfile.py", "zipfile/__init__.py", "pathlib.py", "pathlib/__init__.py", "_pyio.py", "turtle.py",
    "tkinter/__init__.py", "unittest/mock.py", "asyncio/base_events.py", "asyncio/streams.py", "asyncio/locks.py",
    "importlib/_bootstrap_external.py", "email/_header_value_parser.py", "email/feedparser.py",
    "email/headerregistry.py", "ssl.py", "uuid.py", "gzip.py", "lzma.py", "getopt.py", "filecmp.py", "fileinput.py",
    "mimetypes.py", "poplib.py", "pyclbr.py", "tracemalloc.py", "types.py", "webbrowser.py", "zipapp.py",
    "posixpath.py", "logging/handlers.py", "logging/config.py", "multiprocessing/connection.py",
    "concurrent/futures/process.py", "unittest/loader.py", "unittest/result.py", "email/policy.py",
    "email/header.py", "xml/sax/saxutils.py", "xml/sax/handler.py", "wsgiref/handlers.py", "json/encoder.py",
    "_collections_abc.py", "_strptime.py", "sqlite3/__init__.py", "nntplib.py", "telnetlib.py", "aifc.py",
]
WORD = re.compile(r"[a-z]+|[0-9]+|[.,;:?!]")


def read_words(limit):
    """Up to ``limit`` tokens of standard-library docstrings, each line ending in <eos>;
    doctest lines (>>>, ...) are left out."""
    root, words = sysconfig.get_paths()["stdlib"], []
    for rel in SOURCES:
        path = os.path.join(root, rel)
        if not os.path.exists(path):
            continue
        with open(path, encoding="utf-8") as f:
            tree = ast.parse(f.read())
        for node in ast.walk(tree):
            if not isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            for line in (ast.get_docstring(node) or "").splitlines():
                line = line.strip()
                tokens = WORD.findall(line.lower())
                if tokens and not line.startswith((">>>", "...")):
                    words += tokens + ["<eos>"]
            if len(words) >= limit:
                return words[:limit]
    return words


class Corpus:
    """Train, validation and test ids (int64 Tensors) of the docstring corpus; words seen
    fewer than ``min_count`` times in it are <unk>."""

    def __init__(self, limit, min_count=3):
        words = read_words(limit)
        counts = collections.Counter(words)
        self.idx2word = ["<unk>"] + sorted(w for w, c in counts.items() if c >= min_count)
        self.word2idx = {w: i for i, w in enumerate(self.idx2word)}
        ids = [self.word2idx.get(w, 0) for w in words]
        a, b = int(len(ids) * 0.8), int(len(ids) * 0.9)
        self.train, self.valid, self.test = (dtrain.tensor(ids[s]) for s in (slice(0, a), slice(a, b), slice(b, None)))
        # the baseline to beat: word frequencies of the training text (add-one smoothed) on validation
        freq = collections.Counter(ids[:a])
        total = a + len(self.idx2word)
        self.unigram_ppl = math.exp(-sum(math.log((freq[i] + 1) / total) for i in ids[a:b]) / (b - a))


class RNNModel(nn.Module):
    """Container module with an encoder, a recurrent module, and a decoder."""

    def __init__(self, rnn_type, ntoken, ninp, nhid, nlayers, dropout=0.5, tie_weights=False):
        super().__init__()
        self.ntoken = ntoken
        self.drop = nn.Dropout(dropout)
        self.encoder = nn.Embedding(ntoken, ninp)
        if rnn_type in ["LSTM", "GRU"]:
            self.rnn = getattr(nn, rnn_type)(ninp, nhid, nlayers, dropout=dropout)
        else:
            nonlinearity = {"RNN_TANH": "tanh", "RNN_RELU": "relu"}[rnn_type]
            self.rnn = nn.RNN(ninp, nhid, nlayers, nonlinearity=nonlinearity, dropout=dropout)
        self.decoder = nn.Linear(nhid, ntoken)
        if tie_weights:
            if nhid != ninp:
                raise ValueError("When using the tied flag, nhid must be equal to emsize")
            self.decoder.weight = self.encoder.weight
        self.init_weights()
        self.rnn_type, self.nhid, self.nlayers = rnn_type, nhid, nlayers

    def init_weights(self):
        initrange = 0.1
        nn.init.uniform_(self.encoder.weight, -initrange, initrange)
        nn.init.zeros_(self.decoder.bias)
        nn.init.uniform_(self.decoder.weight, -initrange, initrange)

    def forward(self, input, hidden):
        emb = self.drop(self.encoder(input))
        output, hidden = self.rnn(emb, hidden)
        output = self.drop(output)
        decoded = self.decoder(output)
        decoded = decoded.view(-1, self.ntoken)
        return F.log_softmax(decoded, dim=1), hidden

    def init_hidden(self, bsz):
        weight = next(self.parameters())
        if self.rnn_type == "LSTM":
            return (weight.new_zeros(self.nlayers, bsz, self.nhid), weight.new_zeros(self.nlayers, bsz, self.nhid))
        return weight.new_zeros(self.nlayers, bsz, self.nhid)


def batchify(data, bsz):
    """Cut the id stream into ``bsz`` columns: (len // bsz, bsz)."""
    nbatch = data.size(0) // bsz
    data = data.narrow(0, 0, nbatch * bsz)
    return data.view(bsz, -1).t().contiguous()


def repackage_hidden(h):
    """Detach hidden states from their history (truncated backpropagation through time)."""
    if isinstance(h, dtrain.Tensor):
        return h.detach()
    return tuple(repackage_hidden(v) for v in h)


def get_batch(source, i, bptt):
    """Rows i .. i + bptt of ``source`` and, flattened, the rows one step later."""
    seq_len = min(bptt, len(source) - 1 - i)
    data = source[i:i + seq_len]
    target = source[i + 1:i + 1 + seq_len].reshape(-1)
    return data, target


def main(argv=None):
    parser = argparse.ArgumentParser(description="LSTM word language model on Python docstrings")
    parser.add_argument("--model", type=str, default="LSTM", help="RNN_TANH, RNN_RELU, LSTM or GRU")
    parser.add_argument("--emsize", type=int, default=200, help="size of word embeddings")
    parser.add_argument("--nhid", type=int, default=200, help="number of hidden units per layer")
    parser.add_argument("--nlayers", type=int, default=2, help="number of layers")
    parser.add_argument("--lr", type=float, default=20, help="initial learning rate")
    parser.add_argument("--clip", type=float, default=0.25, help="gradient clipping")
    parser.add_argument("--epochs", type=int, default=6, help="upper epoch limit")
    parser.add_argument("--batch_size", type=int, default=20, metavar="N", help="batch size")
    parser.add_argument("--bptt", type=int, default=35, help="sequence length")
    parser.add_argument("--dropout", type=float, default=0.2, help="dropout applied to layers (0 = no dropout)")
    parser.add_argument("--tied", action="store_true", help="tie the word embedding and softmax weights")
    parser.add_argument("--seed", type=int, default=1111, help="random seed")
    parser.add_argument("--log-interval", type=int, default=50, metavar="N", help="report interval")
    parser.add_argument("--save", type=str, default="model.pt", help="path to save the final model")
    parser.add_argument("--words", type=int, default=250000, help="corpus size in tokens (80%% for training)")
    parser.add_argument("--dry-run", action="store_true", help="verify the code and the model")
    args = parser.parse_args(argv)

    dtrain.manual_seed(args.seed)
    corpus = Corpus(args.words)
    eval_batch_size = 10
    train_data = batchify(corpus.train, args.batch_size)
    val_data = batchify(corpus.valid, eval_batch_size)
    test_data = batchify(corpus.test, eval_batch_size)
    ntokens = len(corpus.idx2word)
    print(f"| corpus: {len(corpus.train)} train / {len(corpus.valid)} valid / {len(corpus.test)} test tokens, "
          f"vocabulary {ntokens} | valid ppl of: uniform {ntokens}, train unigram {corpus.unigram_ppl:.1f}")
    model = RNNModel(args.model, ntokens, args.emsize, args.nhid, args.nlayers, args.dropout, args.tied)
    criterion = nn.NLLLoss()

    def evaluate(data_source):
        model.eval()
        total_loss = 0.0
        hidden = model.init_hidden(eval_batch_size)
        with dtrain.no_grad():
            for i in range(0, data_source.size(0) - 1, args.bptt):
                data, targets = get_batch(data_source, i, args.bptt)
                output, hidden = model(data, hidden)
                hidden = repackage_hidden(hidden)
                total_loss += len(data) * criterion(output, targets).item()
        return total_loss / (len(data_source) - 1)

    def train(epoch, lr):
        model.train()
        total_loss, epoch_loss, batches = 0.0, 0.0, 0
        start_time = time.time()
        hidden = model.init_hidden(args.batch_size)
        for batch, i in enumerate(range(0, train_data.size(0) - 1, args.bptt)):
            data, targets = get_batch(train_data, i, args.bptt)
            model.zero_grad()
            hidden = repackage_hidden(hidden)
            output, hidden = model(data, hidden)
            loss = criterion(output, targets)
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), args.clip)
            for p in model.parameters():
                p.data.add_(p.grad, alpha=-lr)
            total_loss += loss.item()
            epoch_loss += loss.item()
            batches += 1
            if batch % args.log_interval == 0 and batch > 0:
                cur_loss = total_loss / args.log_interval
                elapsed = time.time() - start_time
                print(f"| epoch {epoch:3d} | {batch:5d}/{len(train_data) // args.bptt:5d} batches | lr {lr:02.2f} | "
                      f"ms/batch {elapsed * 1000 / args.log_interval:5.2f} | loss {cur_loss:5.2f} | "
                      f"ppl {math.exp(cur_loss):8.2f}")
                total_loss = 0.0
                start_time = time.time()
            if args.dry_run:
                break
        return epoch_loss / batches

    lr, best_val_loss, history = args.lr, None, []
    for epoch in range(1, args.epochs + 1):
        epoch_start_time = time.time()
        train_loss = train(epoch, lr)
        val_loss = evaluate(val_data)
        history.append((train_loss, val_loss))
        print("-" * 89)
        print(f"| end of epoch {epoch:3d} | time: {time.time() - epoch_start_time:5.2f}s | "
              f"valid loss {val_loss:5.2f} | valid ppl {math.exp(val_loss):8.2f}")
        print("-" * 89)
        if best_val_loss is None or val_loss < best_val_loss:
            dtrain.save(model.state_dict(), args.save)
            best_val_loss = val_loss
        else:
            lr /= 4.0  # anneal the learning rate when validation stops improving
    model.load_state_dict(dtrain.load(args.save))
    test_loss = evaluate(test_data)
    print("=" * 89)
    print(f"| End of training | test loss {test_loss:5.2f} | test ppl {math.exp(test_loss):8.2f}")
    print("=" * 89)
    return history, test_loss


if __name__ == "__main__":
    main()
