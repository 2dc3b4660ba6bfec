"""City partition: every signal in exactly one region, sub-models that keep the signals' programs, and
boundary flows that match the whole model's.

Tolerance of the boundary flows (stated in ``docs/scaling.md``): over a
region's entry roads, the vehicles arriving in its sub-model are within 2 %
of the whole model's count, and no entry road is off by GEH 5 or more (the
calibration threshold the project uses for counts, ``simulation.calibrate``).
"""

from __future__ import annotations

import argparse
import json
from collections import Counter

import pytest

from simulation.citygen import grid_city
from simulation.executor import LocalProcessExecutor, ScenarioFiles, SimTask
from simulation.partition import (
    add_commands,
    assign_junctions,
    boundary_flows,
    city_routes_with_exit_times,
    partition_signals,
    partition_site,
    region_edges,
    signal_graph,
)
from simulation.scenario import load_scenario
from traffic.errors import ScenarioError

BOUNDARY_TOTAL_TOLERANCE = 0.02
BOUNDARY_GEH_MAX = 5.0


@pytest.fixture(scope="module")
def city(tmp_path_factory):
    return grid_city(tmp_path_factory.mktemp("city6"), n=6, end=600, period_s=0.3)


def test_every_signal_in_exactly_one_region(city) -> None:
    net = signal_graph(city.net_file)
    assert net.graph.number_of_nodes() == city.signals == 36
    part = partition_signals(net, max_signals=9)
    members = Counter(s for r in part.regions for s in r.signals)
    assert set(members) == set(net.graph.nodes) and set(members.values()) == {1}
    assert sorted(len(r.signals) for r in part.regions) == [9, 9, 9, 9]  # balanced
    assert part.cut_roads <= 12  # a 6 x 6 grid in four 3 x 3 blocks cuts 12 of its 60 roads
    # unsignalised junctions (the fringe's dead ends) belong to one region too
    owner = assign_junctions(net, part)
    assert set(owner) >= set(net.node_pos)


def test_declared_corridors_stay_whole(city) -> None:
    net = signal_graph(city.net_file)
    row = [f"{c}2" for c in "ABCDEF"]
    part = partition_signals(net, max_signals=8, corridors={"row2": row})
    first = part.regions[0]
    assert (first.kind, first.name, first.signals) == ("corridor", "row2", tuple(row))
    members = Counter(s for r in part.regions for s in r.signals)
    assert set(members.values()) == {1} and len(members) == 36
    with pytest.raises(ScenarioError, match="unknown signals"):
        partition_signals(net, corridors={"x": ["Z9"]})
    with pytest.raises(ScenarioError, match="already in corridor"):
        partition_signals(net, corridors={"a": ["A0", "A1"], "b": ["A1", "A2"]})


def test_region_roads_overlap_only_at_the_boundary(city) -> None:
    net = signal_graph(city.net_file)
    part = partition_signals(net, max_signals=9)
    owner = assign_junctions(net, part)
    seen: Counter = Counter()
    for r in part.regions:
        kept, entries, exits = region_edges(net, owner, r.region_id)
        assert set(entries) <= set(kept) and set(exits) <= set(kept)
        seen.update(kept)
    assert set(seen) == set(net.edges)  # no road lost
    assert all(n in (1, 2) for n in seen.values())  # a road between two regions is in both


def test_cli_registers_site_partition() -> None:
    parser = argparse.ArgumentParser(prog="traffic")
    add_commands(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["site", "partition", "--scenario", "x", "--out", "y", "--max-signals", "12"])
    assert args.max_signals == 12 and callable(args.func)


@pytest.mark.slow
def test_boundary_flows_match_the_whole_model(city, tmp_path) -> None:
    scenario = load_scenario(city.sumocfg, detectors_dir=tmp_path / "det")
    routes, _ = city_routes_with_exit_times(scenario, tmp_path / "whole", seed=1, begin=0, end=city.end)
    site = partition_site(city.net_file, [routes], tmp_path / "regions", begin=0, end=city.end, max_signals=9)
    assert len(site.models) == 4 and (tmp_path / "regions" / "partition.json").exists()
    entries = tuple(sorted({e for m in site.models for e in m.entries}))
    tasks = [SimTask(key="whole", scenario=ScenarioFiles.shared(city.sumocfg), seed=1, measure_edges=entries)]
    tasks += [SimTask(key=m.region.region_id, scenario=ScenarioFiles.carried(m.folder), seed=1,
                      measure_edges=m.entries) for m in site.models]
    with LocalProcessExecutor(2) as ex:
        whole, *regions = ex.run(tasks)
    report = []
    for model, result in zip(site.models, regions, strict=False):
        flows = boundary_flows(model, whole.edges, result.edges, city.end)
        report.append(flows.to_dict())
        assert sum(flows.whole.values()) > 100
        assert abs(flows.total_error) <= BOUNDARY_TOTAL_TOLERANCE, json.dumps(report)
        assert max(flows.geh().values()) < BOUNDARY_GEH_MAX, json.dumps(report)
