module github.com/roost-mqtt/roost

go 1.26
