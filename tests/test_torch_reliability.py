"""pywino3d.torch inside other people's training loops: DDP, memory over many
steps with the U cache, threads, LowRankWinogradConv3d's composed U, CUDA."""
import gc
import os
import threading
import time
import tracemalloc

import pytest

torch = pytest.importorskip("torch")

from pywino3d.torch import algorithm as _torch_plan  # noqa: E402
from pywino3d.torch import Conv3d, LowRankWinogradConv3d  # noqa: E402


@pytest.fixture(autouse=True)
def _cost_model(monkeypatch):
    monkeypatch.setenv("PYWINO3D_AUTOTUNE", "0")
    _torch_plan.clear()
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def _net(seed=0):
    torch.manual_seed(seed)
    return torch.nn.Sequential(Conv3d(2, 4, 3, padding=1, tile=2, dtype=torch.float64), torch.nn.Tanh(),
                               Conv3d(4, 3, (1, 3, 3), padding="same", tile=2, dtype=torch.float64))


def _ddp_worker(rank, world, init, x, t, out):
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel as DDP

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=world)
    try:
        model = DDP(_net())
        half = x.shape[0] // world
        sl = slice(rank * half, (rank + 1) * half)
        torch.nn.functional.mse_loss(model(x[sl]), t[sl]).backward()
        if rank == 0:
            torch.save({k: p.grad for k, p in model.module.named_parameters()}, out)
    finally:
        dist.destroy_process_group()


def _spawn(fn, args_of, nprocs, timeout=180, tries=2):
    """``torch.multiprocessing`` spawn with a deadline.  A launch whose rank
    dies by a signal (gloo's teardown aborts a rank once in many runs, after
    its work is done; the other rank may then wait for ever) or that passes
    the deadline is killed and repeated once with a fresh rendezvous.  An
    exception raised inside a worker fails at once; the caller checks the
    results either way."""
    for attempt in range(tries):
        ctx = torch.multiprocessing.start_processes(fn, args=args_of(attempt), nprocs=nprocs, join=False,
                                                    start_method="spawn")
        deadline = time.monotonic() + timeout
        try:
            while not ctx.join(timeout=5):
                if time.monotonic() > deadline:
                    raise TimeoutError(f"DDP workers still running after {timeout} s")
            return
        except (TimeoutError, torch.multiprocessing.ProcessExitedException):
            for p in ctx.processes:
                if p.is_alive():
                    p.kill()
            if attempt == tries - 1:
                raise


def _abort_first_launch(rank, marker):
    if rank == 0 and not os.path.exists(marker):
        open(marker, "w").close()
        os.abort()


def _raise(rank):
    raise ValueError("a worker's own error")


def test_spawn_repeats_an_aborted_launch_only(tmp_path):
    marker = str(tmp_path / "aborted")
    _spawn(_abort_first_launch, lambda attempt: (marker,), nprocs=2)
    assert os.path.exists(marker)
    with pytest.raises(torch.multiprocessing.ProcessRaisedException, match="own error"):
        _spawn(_raise, lambda attempt: (), nprocs=1)


def test_ddp_gradients_equal_full_batch(tmp_path):
    torch.manual_seed(3)
    x = torch.randn(4, 2, 5, 6, 5, dtype=torch.float64)
    t = torch.randn(4, 3, 5, 6, 5, dtype=torch.float64)
    out = str(tmp_path / "grads.pt")
    _spawn(_ddp_worker, lambda attempt: (2, f"file://{tmp_path / f'store{attempt}'}", x, t, out), nprocs=2)
    ddp = torch.load(out)
    single = _net()
    torch.nn.functional.mse_loss(single(x), t).backward()
    assert set(ddp) == {k for k, _ in single.named_parameters()}
    for k, p in single.named_parameters():
        torch.testing.assert_close(ddp[k], p.grad, rtol=1e-10, atol=1e-12)


def _rss_bytes():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@pytest.mark.skipif(not os.path.exists("/proc/self/statm"), reason="RSS read from /proc (Linux)")
def test_no_memory_growth_over_1000_training_steps():
    torch.set_num_threads(1)
    model = torch.nn.Sequential(Conv3d(2, 4, 3, padding=1, tile=2), torch.nn.ReLU(),
                                Conv3d(4, 2, 3, padding=1))
    opt = torch.optim.SGD(model.parameters(), lr=1e-3)
    x = torch.randn(1, 2, 4, 4, 4)

    def step():
        model.train()
        opt.zero_grad()
        model(x).square().mean().backward()
        opt.step()
        model.eval()
        with torch.no_grad():  # the U cache is refilled after every step
            model(x)

    for _ in range(200):  # warm-up
        step()
    gc.collect()
    tracemalloc.start()
    rss = [_rss_bytes()]
    snaps = [tracemalloc.take_snapshot()]
    for half in range(2):
        for _ in range(500):
            step()
        gc.collect()
        snaps.append(tracemalloc.take_snapshot())
        rss.append(_rss_bytes())
    tracemalloc.stop()
    rss_grown = rss[2] - rss[0]
    # allocations made by the layer's code (module, plans, operators): nothing may accumulate
    ours = [tracemalloc.Filter(True, "*pywino3d*torch*")]
    grown = sum(s.size_diff for s in snaps[2].filter_traces(ours).compare_to(snaps[0].filter_traces(ours),
                                                                             "filename"))
    assert grown < 4 * 1024, f"pywino3d's allocations grew by {grown} bytes over 1000 steps"
    # everything (torch's dispatcher fills bounded caches of its own for a
    # while): a leak of a small object per step would show in the second half
    total = sum(s.size_diff for s in snaps[2].compare_to(snaps[1], "filename"))
    assert total < 64 * 1024, f"Python allocations grew by {total} bytes over the last 500 steps"
    # RSS: a leak grows in both halves alike; one-off growth (allocator arenas
    # of threads scheduled differently on a loaded machine, torch's caches)
    # lands in the first.  So the second half is held to 4 MiB (a leak of
    # 8 KiB per step would show), the whole run to a generous 16 MiB.
    assert rss[2] - rss[1] < 4 * 2 ** 20, f"RSS grew by {(rss[2] - rss[1]) / 2**20:.1f} MiB over the last 500 steps"
    assert rss_grown < 16 * 2 ** 20, f"RSS grew by {rss_grown / 2**20:.1f} MiB over 1000 steps"
    assert all(len(m.plans) <= 2 for m in model if isinstance(m, Conv3d))


def test_one_module_from_several_threads():
    torch.manual_seed(0)
    layer = Conv3d(3, 5, 3, padding=1, tile=2).eval()
    ref = torch.nn.Conv3d(3, 5, 3, padding=1).eval()
    ref.load_state_dict(layer.state_dict())
    inputs = [torch.randn(1, 3, 6, 5, 7) for _ in range(8)]
    with torch.no_grad():
        expect = [ref(x) for x in inputs]
    errors, results = [], {}

    def worker(i):
        try:
            for r in range(10):
                if r % 5 == 0:
                    layer.clear_cache()  # races the cache fill on purpose
                with torch.no_grad():
                    results[(i, r)] = layer(inputs[i])
        except Exception as e:  # noqa: BLE001
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(len(inputs))]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert not errors, errors
    for (i, _), y in results.items():
        torch.testing.assert_close(y, expect[i], rtol=1e-5, atol=1e-5)


def test_lowrank_composes_U_once_in_eval():
    torch.manual_seed(0)
    layer = LowRankWinogradConv3d(3, 4, 3, padding=1, tile=2, rank=5, mode="residual")
    with torch.no_grad():
        layer.Q.normal_()
    x = torch.randn(1, 3, 5, 5, 5)
    calls = [0]
    orig = layer._compose

    def counting():
        calls[0] += 1
        return orig()

    layer._compose = counting
    layer.eval()
    with torch.no_grad():
        y0 = layer(x)
        y1 = layer(x)
    assert calls[0] == 1 and torch.equal(y0, y1)
    with torch.no_grad():  # an in-place update of P, Q or U0 invalidates it
        layer.P.mul_(2)
        y2 = layer(x)
        assert calls[0] == 2 and not torch.allclose(y2, y0)
        layer.U0.zero_()
        layer(x)
        assert calls[0] == 3
    layer.train()  # with gradients U carries the graph: composed every call
    layer(x).sum().backward()
    layer(x)
    assert calls[0] == 5 and layer.P.grad is not None


def _cuda_ok():
    from pywino3d._backends.dispatch import cuda_status

    return cuda_status()[0] and torch.cuda.is_available()


@pytest.mark.skipif(not _cuda_ok(), reason="needs a GPU (cupy.cuda.is_available() and torch CUDA)")
def test_cuda_tensors_through_dlpack():
    torch.manual_seed(0)
    ref = torch.nn.Conv3d(3, 4, 3, padding=1).cuda()
    ours = Conv3d(3, 4, 3, padding=1, tile=2).cuda()
    ours.load_state_dict(ref.state_dict())
    x = torch.randn(2, 3, 8, 8, 8, device="cuda", requires_grad=True)
    y = ours(x)
    assert y.device == x.device and next(iter(ours.plans.values())).algo == "pywino3d"
    torch.backends.cudnn.allow_tf32 = False
    torch.testing.assert_close(y, ref(x), rtol=1e-4, atol=1e-4)
    y.sum().backward()
    assert ours.weight.grad.device == x.device
