"""envs.microservice.parallel (microservice_autoscaling_v0): PettingZoo API, seeding, spaces, state, layouts, merge rule, rewards."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
from gymnasium.utils.env_checker import data_equivalence
from pettingzoo.test import api_test, parallel_api_test, parallel_seed_test, seed_test, state_test

from envs.microservice import parallel as ms
from envs.microservice.parallel import merge_proposals
from tests.envs.microservice_helpers import masked_random_actions

LAYOUTS = [("online_boutique_worldcup", "per_service"), ("online_boutique_failures", "roles"),
           ("chain4_huawei", "roles")]


@pytest.mark.parametrize("config, layout", LAYOUTS)
def test_parallel_api(config, layout):
    parallel_api_test(ms.parallel_env(config=config, layout=layout, window_steps=25), num_cycles=60)


@pytest.mark.parametrize("config, layout", LAYOUTS[:2])
def test_parallel_seed(config, layout):
    parallel_seed_test(lambda: ms.parallel_env(config=config, layout=layout, window_steps=20), num_cycles=30)


# The style guide's {"observation", "action_mask"} dict observations, MultiDiscrete role actions and
# service names as agent ids are deliberate; api_test only recommends otherwise.
AEC_RECOMMENDATIONS = [
    "ignore:Observation space for each agent probably should be:UserWarning",
    "ignore:Action space for each agent probably should be:UserWarning",
    "ignore:We recommend agents to be named:UserWarning",
    "ignore:Observation is not a NumPy array:UserWarning",
]


@pytest.mark.parametrize("layout", ["per_service", "roles"])
@pytest.mark.filterwarnings(*AEC_RECOMMENDATIONS)
def test_aec_api_seed_and_state(layout):
    make = lambda: ms.env(config="chain4_huawei", layout=layout, window_steps=15)  # noqa: E731
    api_test(make(), num_cycles=30)
    seed_test(make, num_cycles=20)
    state_test(make(), ms.parallel_env(config="chain4_huawei", layout=layout, window_steps=15), num_cycles=20)


@pytest.mark.parametrize("layout", ["per_service", "roles"])
def test_observations_and_state_stay_in_their_spaces(layout):
    par = ms.parallel_env(config="online_boutique_failures", layout=layout, window_steps=80, initial_replicas="random")
    for variant in ("ddos_flood", "pod_crashes", "node_loss"):
        obs, infos = par.reset(seed=1, options={"scenario": variant})
        while par.agents:
            assert par.state_space.contains(par.state())
            for agent in par.agents:
                assert par.observation_space(agent).contains(obs[agent]), (agent, variant)
            actions = {a: par.action_space(a).sample(mask=obs[a]["action_mask"]) for a in par.agents}
            obs, rewards, terminations, truncations, infos = par.step(actions)
        assert all(truncations.values()) and not any(terminations.values())
        for agent, o in obs.items():
            assert par.observation_space(agent).contains(o)


def test_merge_rule_scale_up_wins_else_largest_scale_down():
    proposals = np.array([[1, 0, -1, 0, 0],
                          [2, -2, 0, 0, 1],
                          [-1, -1, 0, 0, 0]])
    merged, conflict = merge_proposals(proposals)
    assert merged.tolist() == [2, -2, -1, 0, 1]
    assert conflict.tolist() == [True, False, False, False, False]


def test_role_masks_follow_scope_and_moves():
    par = ms.parallel_env(config="online_boutique_failures", initial_replicas=3)
    obs, _ = par.reset(seed=0)
    core = par.core
    s, d = core.num_services, core.num_deltas
    deltas = core.deltas
    entry_tier = {core.topology.entry_index} | set(np.flatnonzero(core.topology.calls[core.topology.entry_index]).tolist())
    ddos = obs["ddos_manager"]["action_mask"].reshape(s, d).astype(bool)
    for svc in range(s):
        if svc in entry_tier and core.high[svc] > 3:
            assert ddos[svc].tolist() == (deltas >= 0).tolist()
        elif svc not in entry_tier:
            assert ddos[svc].tolist() == (deltas == 0).tolist()
        assert obs["ddos_manager"]["observation"][svc, core.num_metrics + 1] == (svc in entry_tier)
    availability = obs["availability_manager"]["action_mask"].reshape(s, d).astype(bool)
    resource = obs["resource_manager"]["action_mask"].reshape(s, d).astype(bool)
    assert not availability[:, deltas < 0].any() and resource[0, deltas < 0].all()
    assert np.array_equal(par.action_masks("resource_manager"), obs["resource_manager"]["action_mask"].astype(bool))


def test_roles_conflict_is_merged_and_forbidden_moves_ignored():
    par = ms.parallel_env(config="online_boutique_failures", initial_replicas=3)
    par.reset(seed=0)
    core = par.core
    s = core.num_services
    idx = {int(x): i for i, x in enumerate(core.deltas)}
    frontend, payment = core.topology.index("frontend"), core.topology.index("payment")
    ddos = np.full(s, idx[0])
    ddos[frontend] = idx[1]       # +1 on frontend
    ddos[payment] = idx[2]        # payment is outside its scope: ignored
    resource = np.full(s, idx[0])
    resource[frontend] = idx[-2]  # conflicts with the ddos manager: scale-up wins
    resource[payment] = idx[-1]   # unopposed scale-down, 3 -> 2
    availability = np.full(s, idx[0])
    availability[frontend] = idx[2]  # the largest scale-up wins
    _, rewards, _, _, infos = par.step({"ddos_manager": ddos, "resource_manager": resource,
                                        "availability_manager": availability})
    assert core.desired[0, frontend] == 5 and core.desired[0, payment] == 2
    assert infos["ddos_manager"]["conflicts"] == 1
    assert infos["ddos_manager"]["invalid_moves"] == 1 and infos["resource_manager"]["invalid_moves"] == 0
    assert infos["resource_manager"]["applied_delta"][frontend] == 2
    assert infos["ddos_manager"]["applied_delta"][payment] == 0  # outside its scope
    assert infos["resource_manager"]["applied_delta"][payment] == -1


def test_per_service_agents_see_their_neighbours_and_control_themselves():
    par = ms.parallel_env(config="online_boutique_worldcup")
    obs, _ = par.reset(seed=0)
    core = par.core
    m = core.num_metrics
    names = core.service_names
    payment = obs["payment"]["observation"]
    visible = {names[i] for i in np.flatnonzero(payment[:, m])}
    assert visible == {"payment", "checkout"}
    assert np.all(payment[[i for i, n in enumerate(names) if n not in visible], :m] == 0)
    assert payment[:, m + 1].tolist() == [float(n == "payment") for n in names]
    frontend_visible = {names[i] for i in np.flatnonzero(obs["frontend"]["observation"][:, m])}
    assert frontend_visible == {"frontend", "productcatalog", "currency", "cart", "recommendation", "shipping",
                                "checkout", "ad"}
    assert obs["redis-cart"]["action_mask"].tolist() == [0, 0, 1, 0, 0]  # min = max = 1 replica


@pytest.mark.parametrize("config, layout", LAYOUTS[:2])
def test_rewards_are_shared_global_reward_plus_mission(config, layout):
    par = ms.parallel_env(config=config, layout=layout, window_steps=15)
    obs, _ = par.reset(seed=4)
    while par.agents:
        actions = {a: par.action_space(a).sample(mask=obs[a]["action_mask"]) for a in par.agents}
        obs, rewards, _, _, infos = par.step(actions)
        for agent, reward in rewards.items():
            info = infos[agent]
            global_reward = info["reward_slo"] + info["reward_drop"] + info["reward_cost"]
            assert reward == pytest.approx(global_reward + info["mission_reward"])
            assert info["mission_reward"] <= 0.0
            weighted = [k for k in info if k.startswith("mission_") and k != "mission_reward"]
            assert weighted  # every agent reports its mission terms


def test_per_service_and_vector_helpers_agree_on_masks():
    par = ms.parallel_env(config="chain4_huawei", layout="per_service", initial_replicas=1)
    obs, _ = par.reset(seed=0)
    stacked = np.stack([obs[a]["action_mask"] for a in par.agents])  # (S, D)
    assert np.array_equal(stacked.astype(bool), par.core.action_mask()[0])
    actions = masked_random_actions(np.random.default_rng(0), stacked.reshape(1, -1), par.core.num_deltas)[0]
    assert all(stacked[i, a] for i, a in enumerate(actions))


def test_truncation_empties_agents_and_pickles():
    par = ms.parallel_env(config="chain4_huawei", layout="roles", window_steps=3)
    clone = pickle.loads(pickle.dumps(par))
    o1, _ = par.reset(seed=9)
    o2, _ = clone.reset(seed=9)
    assert data_equivalence(o1, o2, exact=True)
    for _ in range(3):
        _, _, _, truncations, _ = par.step({})
    assert all(truncations.values()) and par.agents == []
    with pytest.raises(RuntimeError, match="reset"):
        par.step({})


@pytest.mark.parametrize("layout", ["per_service", "roles"])
def test_spaces_are_built_once_and_do_not_keep_the_env_alive(layout):
    import gc
    import weakref

    par = ms.parallel_env(config="chain4_huawei", layout=layout)
    for agent in par.possible_agents:
        assert par.observation_space(agent) is par.observation_space(agent)
        assert par.action_space(agent) is par.action_space(agent)
    # One object per agent: seeding one agent's space leaves the others' draws alone.
    assert len({id(par.action_space(a)) for a in par.possible_agents}) == len(par.possible_agents)
    ref = weakref.ref(par)
    del par
    gc.collect()
    assert ref() is None, "a cache still holds the env"


def test_the_deprecated_module_path_still_gives_parallel_env():
    import importlib
    import sys

    sys.modules.pop("envs.microservice_autoscaling_v0", None)
    with pytest.warns(DeprecationWarning, match="envs.microservice"):
        old = importlib.import_module("envs.microservice_autoscaling_v0")
    assert old.parallel_env is ms.parallel_env
    from envs.microservice import parallel_env

    assert parallel_env is ms.parallel_env
