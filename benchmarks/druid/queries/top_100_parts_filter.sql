select l_partkey, sum(l_quantity), sum(l_extendedprice), min(l_discount), max(l_discount)
from lineitem
where l_shipdate between '1996-01-15' and '1998-03-15'
group by l_partkey
order by sum(l_quantity) desc, l_partkey
limit 100;
