"""The robustness corpus keeps only trips every vehicle class of the mix can drive (real duarouter).

SUMO draws a vehicle's type from the mix when it departs; under
``ignore-route-errors`` a motorcycle drawn for a car-only trip stands at the
end of its first edge for the rest of the run and blocks its lane.
"""

from __future__ import annotations

import subprocess
import xml.etree.ElementTree as ET

from bench.corpus import _types_file, drop_unroutable_trips
from simulation.binaries import sumo_binary


def _net(tmp_path):
    """West-east road a-b-c; a northern spur b-n that only cars may use."""
    (tmp_path / "n.nod.xml").write_text(
        '<nodes><node id="a" x="0" y="0"/><node id="b" x="200" y="0"/><node id="c" x="400" y="0"/>'
        '<node id="n" x="200" y="200"/></nodes>')
    (tmp_path / "n.edg.xml").write_text(
        '<edges><edge id="ab" from="a" to="b" numLanes="1"/><edge id="bc" from="b" to="c" numLanes="1"/>'
        '<edge id="bn" from="b" to="n" numLanes="1" allow="passenger"/></edges>')
    net = tmp_path / "net.net.xml"
    subprocess.run([sumo_binary("netconvert"), "-n", "n.nod.xml", "-e", "n.edg.xml", "-o", net.name,
                    "--no-turnarounds", "true", "--no-warnings", "true"], cwd=tmp_path, check=True,
                   capture_output=True)
    return net


def test_a_trip_only_cars_can_drive_is_dropped_and_the_others_kept(tmp_path):
    net = _net(tmp_path)
    types = _types_file(tmp_path / "types.add.xml")
    trips = tmp_path / "t.trips.xml"
    trips.write_text('<routes><trip id="through" depart="0" from="ab" to="bc" type="mix"/>'
                     '<trip id="car_only" depart="1" from="ab" to="bn" type="mix"/>'
                     '<trip id="later" depart="2" from="ab" to="bc" type="mix"/></routes>')

    assert drop_unroutable_trips(net, trips, types, tmp_path) == 1

    kept = [t.get("id") for t in ET.parse(trips).getroot().iter("trip")]
    assert kept == ["through", "later"]
    assert not list(tmp_path.glob("probe-*")), "the per-class probe files are cleaned up"


def test_a_demand_every_class_can_drive_is_left_as_it_was(tmp_path):
    net = _net(tmp_path)
    types = _types_file(tmp_path / "types.add.xml")
    trips = tmp_path / "t.trips.xml"
    text = '<routes><trip id="through" depart="0" from="ab" to="bc" type="mix"/></routes>'
    trips.write_text(text)

    assert drop_unroutable_trips(net, trips, types, tmp_path) == 0
    assert trips.read_text() == text
