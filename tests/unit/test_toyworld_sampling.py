"""The x0 -> flow wrapper and the Euler sampler: an oracle x0 prediction gives the exact target and sample."""

import torch

from dualpar.toyworld.sampling import predict_flow, sample_euler, x0_to_flow


class OracleX0(torch.nn.Module):
    """Stands in for the transformer: always predicts the same clean latents; records its timesteps."""

    def __init__(self, x0: torch.Tensor) -> None:
        super().__init__()
        self.x0, self.timesteps = x0, []

    def forward(self, z, timestep, text, return_dict=False):
        self.timesteps.append(float(timestep[0]))
        return (self.x0.expand_as(z),)


def test_wrapper_recovers_flow_target():
    g = torch.Generator().manual_seed(0)
    x0, eps = torch.randn(3, 96, 2, 8, 8, generator=g), torch.randn(3, 96, 2, 8, 8, generator=g)
    t = torch.tensor([0.05, 0.5, 1.0])
    z_t = (1 - t.view(-1, 1, 1, 1, 1)) * x0 + t.view(-1, 1, 1, 1, 1) * eps
    assert torch.allclose(x0_to_flow(z_t, x0, t), eps - x0, atol=1e-5)
    v = predict_flow(OracleX0(x0), z_t, t, torch.zeros(3, 16, 64))
    assert torch.allclose(v, eps - x0, atol=1e-5)
    # below min_t the division is clamped: v shrinks instead of blowing up
    small = torch.tensor([0.01])
    assert torch.allclose(x0_to_flow(z_t[:1], x0[:1], small), (z_t[:1] - x0[:1]) / 0.05)


def test_euler_sampler_lands_on_the_oracle_x0_and_uses_t_times_1000():
    x0 = torch.randn(1, 96, 4, 8, 8, generator=torch.Generator().manual_seed(1))
    oracle = OracleX0(x0)
    cond, uncond = torch.zeros(2, 16, 64), torch.zeros(1, 16, 64)
    z = sample_euler(oracle, cond, uncond, (96, 4, 8, 8), steps=5, guidance=3.0,
                     generator=torch.Generator().manual_seed(2))
    assert z.shape == (2, 96, 4, 8, 8)
    assert torch.allclose(z, x0.expand(2, -1, -1, -1, -1), atol=1e-5)
    assert oracle.timesteps == [1000.0, 800.0, 600.0, 400.0, 200.0]
