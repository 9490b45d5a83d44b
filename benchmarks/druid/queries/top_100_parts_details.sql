select l_partkey, sum(l_quantity), sum(l_extendedprice), min(l_discount), max(l_discount)
from lineitem
group by l_partkey
order by sum(l_quantity) desc, l_partkey
limit 100;
